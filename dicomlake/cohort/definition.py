"""Cohort definitions: a small declarative form (YAML or JSON), validated with errors that name the field.

    as_of: 2026-11-01                 # the day ages and relative windows count from (default: today)
    patients:
      age: {min: 46}                  # completed years at as_of, inclusive bounds
      sex: [female]                   # female | male | other | unknown
    conditions:                       # every entry must hold; within one, any code or text matches
      - codes: [{system: "http://snomed.info/sct", code: "307548001"}]
        text: [osteosarcoma]          # case-insensitive, in Condition.code.text or a coding's display
        window: {last: {years: 2}}    # diagnosis (onset, else recorded) date
    imaging:                          # the patient had a study with a series like this (each entry)
      - modalities: [CT]
        body_parts: [CHEST]           # DICOM BodyPartExamined
        window: {start: 2023-01-01}
    medications:                      # the patient has a medication like this (each entry)
      - text: [metformin]
    exclude:                          # ... and none of these (each entry rules a patient out)
      conditions: [{text: [diabetes]}]
      medications: [{text: [insulin], window: {last: {years: 1}}}]
      imaging: [{modalities: [MR]}]
    return:                           # what to give back (patients always)
      studies: {modalities: [CT]}
      medications: {prescribed: true}
      reports: {category: radiology, linked_to_studies: true}
      documents: {linked_to_studies: true}

A window is `{last: {years: N, months: N, days: N}}` (up to as_of) or `{start: DATE, end: DATE}`
(inclusive, either may be missing); no window means any time, and no window reaches past as_of.

An exclusion holds for the whole person: a DICOM patient with several linked FHIR patients is ruled
out when any of them has such a record; a patient without any such record (no clinical data at all,
or no imaging) is not ruled out.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SEXES = {"female": "F", "male": "M", "other": "O", "unknown": None}
COLLECTIONS = ("patients", "studies", "series", "medications", "reports", "documents")
REPORT_CATEGORIES = ("radiology", "laboratory", "pathology", "any")
MODALITY_PATTERN = r"^[A-Z0-9]{2,16}$"


class CohortDefinitionError(ValueError):
    """A definition that cannot be compiled; the message names the field and what was expected."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}" if where else problem)
        self.where, self.problem = where, problem


@dataclass(frozen=True)
class Window:
    last_years: int = 0
    last_months: int = 0
    last_days: int = 0
    start: datetime.date | None = None
    end: datetime.date | None = None

    @property
    def relative(self) -> bool:
        return bool(self.last_years or self.last_months or self.last_days)

    def bounds(self, as_of: datetime.date) -> tuple[datetime.date | None, datetime.date]:
        """Inclusive [start, end], resolved against as_of (the end never passes as_of)."""
        if self.relative:
            return _minus(as_of, self.last_years, self.last_months, self.last_days), as_of
        end = min(self.end, as_of) if self.end else as_of
        return self.start, end

    def as_json(self) -> dict[str, Any]:
        if self.relative:
            last = {"years": self.last_years, "months": self.last_months, "days": self.last_days}
            return {"last": {k: v for k, v in last.items() if v}}
        return {k: v.isoformat() for k, v in (("start", self.start), ("end", self.end)) if v}


def _minus(day: datetime.date, years: int, months: int, days: int) -> datetime.date:
    month_index = day.year * 12 + day.month - 1 - years * 12 - months
    year, month = divmod(month_index, 12)
    month += 1
    for candidate in range(day.day, 27, -1):  # 31 March minus one month is 28/29 February
        try:
            moved = datetime.date(year, month, candidate)
            break
        except ValueError:
            continue
    else:
        moved = datetime.date(year, month, day.day)
    return moved - datetime.timedelta(days=days)


@dataclass(frozen=True)
class Code:
    code: str
    system: str | None = None


@dataclass(frozen=True)
class ClinicalCriterion:
    """A condition or medication: any of the codes or texts, within the window."""

    codes: tuple[Code, ...] = ()
    text: tuple[str, ...] = ()
    window: Window | None = None


@dataclass(frozen=True)
class ImagingFilter:
    modalities: tuple[str, ...] = ()
    body_parts: tuple[str, ...] = ()
    window: Window | None = None

    @property
    def empty(self) -> bool:
        return not (self.modalities or self.body_parts or self.window)


@dataclass(frozen=True)
class Returns:
    collections: tuple[str, ...] = ("patients",)
    studies: ImagingFilter = field(default_factory=ImagingFilter)
    medications_prescribed: bool = False  # MedicationRequests only (not statements)
    medications_window: Window | None = None
    report_category: str = "any"
    reports_window: Window | None = None
    reports_linked_to_studies: bool = False
    documents_window: Window | None = None
    documents_linked_to_studies: bool = False


@dataclass(frozen=True)
class CohortDefinition:
    as_of: datetime.date | None = None
    age_min: int | None = None
    age_max: int | None = None
    sexes: tuple[str, ...] = ()
    conditions: tuple[ClinicalCriterion, ...] = ()
    imaging: tuple[ImagingFilter, ...] = ()
    medications: tuple[ClinicalCriterion, ...] = ()
    returns: Returns = field(default_factory=Returns)
    name: str | None = None
    exclude_conditions: tuple[ClinicalCriterion, ...] = ()
    exclude_imaging: tuple[ImagingFilter, ...] = ()
    exclude_medications: tuple[ClinicalCriterion, ...] = ()

    def resolved_as_of(self) -> datetime.date:
        return self.as_of or datetime.datetime.now(datetime.UTC).date()

    def as_json(self) -> dict[str, Any]:
        """The definition in its documented form (what `parse_definition` reads back)."""
        out: dict[str, Any] = {}
        if self.name:
            out["name"] = self.name
        if self.as_of:
            out["as_of"] = self.as_of.isoformat()
        patients: dict[str, Any] = {}
        age = {k: v for k, v in (("min", self.age_min), ("max", self.age_max)) if v is not None}
        if age:
            patients["age"] = age
        if self.sexes:
            patients["sex"] = list(self.sexes)
        if patients:
            out["patients"] = patients
        if self.conditions:
            out["conditions"] = [_criterion_json(c) for c in self.conditions]
        if self.imaging:
            out["imaging"] = [_imaging_json(i) for i in self.imaging]
        if self.medications:
            out["medications"] = [_criterion_json(c) for c in self.medications]
        exclude: dict[str, Any] = {}
        if self.exclude_conditions:
            exclude["conditions"] = [_criterion_json(c) for c in self.exclude_conditions]
        if self.exclude_imaging:
            exclude["imaging"] = [_imaging_json(i) for i in self.exclude_imaging]
        if self.exclude_medications:
            exclude["medications"] = [_criterion_json(c) for c in self.exclude_medications]
        if exclude:
            out["exclude"] = exclude
        r = self.returns
        ret: dict[str, Any] = {}
        for name in r.collections:
            if name == "studies" or name == "series":
                ret[name] = _imaging_json(r.studies)
            elif name == "medications":
                ret[name] = _drop_none(
                    {
                        "prescribed": r.medications_prescribed or None,
                        "window": r.medications_window and r.medications_window.as_json(),
                    }
                )
            elif name == "reports":
                ret[name] = _drop_none(
                    {
                        "category": None if r.report_category == "any" else r.report_category,
                        "window": r.reports_window and r.reports_window.as_json(),
                        "linked_to_studies": r.reports_linked_to_studies or None,
                    }
                )
            elif name == "documents":
                ret[name] = _drop_none(
                    {
                        "window": r.documents_window and r.documents_window.as_json(),
                        "linked_to_studies": r.documents_linked_to_studies or None,
                    }
                )
            else:
                ret[name] = {}
        out["return"] = ret
        return out


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _criterion_json(c: ClinicalCriterion) -> dict[str, Any]:
    return _drop_none(
        {
            "codes": [_drop_none(asdict(k)) for k in c.codes] or None,
            "text": list(c.text) or None,
            "window": c.window and c.window.as_json(),
        }
    )


def _imaging_json(i: ImagingFilter) -> dict[str, Any]:
    return _drop_none(
        {
            "modalities": list(i.modalities) or None,
            "body_parts": list(i.body_parts) or None,
            "window": i.window and i.window.as_json(),
        }
    )


# -- reading and validating ------------------------------------------------------------------------


def load_definition(path: str | Path) -> CohortDefinition:
    """A definition from a .yaml/.yml or .json file."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # the parser's own message says where
        raise CohortDefinitionError(
            str(path), f"not valid {path.suffix.lstrip('.') or 'JSON'}: {exc}"
        ) from exc
    return parse_definition(data)


def parse_definition(data: Any) -> CohortDefinition:
    """Validate a definition given as a mapping (parsed YAML/JSON) and build it."""
    if isinstance(data, CohortDefinition):
        return data
    obj = _mapping(
        data, "", {"name", "as_of", "patients", "conditions", "imaging", "medications", "exclude", "return"}
    )
    exclude = _mapping(obj.get("exclude", {}), "exclude", {"conditions", "imaging", "medications"})
    patients = _mapping(obj.get("patients", {}), "patients", {"age", "sex"})
    age = _mapping(patients.get("age", {}), "patients.age", {"min", "max"})
    age_min = _age(age.get("min"), "patients.age.min")
    age_max = _age(age.get("max"), "patients.age.max")
    if age_min is not None and age_max is not None and age_min > age_max:
        raise CohortDefinitionError("patients.age", f"min {age_min} is above max {age_max}")
    sexes = tuple(
        _choice(s, f"patients.sex[{i}]", tuple(SEXES))
        for i, s in enumerate(_list(patients.get("sex", []), "patients.sex"))
    )
    name = obj.get("name")
    if name is not None and not isinstance(name, str):
        raise CohortDefinitionError("name", "expected a string")
    return CohortDefinition(
        as_of=_date(obj["as_of"], "as_of") if obj.get("as_of") is not None else None,
        age_min=age_min,
        age_max=age_max,
        sexes=sexes,
        conditions=_each(obj, "conditions", _criterion),
        imaging=_each(obj, "imaging", _required_imaging),
        medications=_each(obj, "medications", _criterion),
        returns=_returns(obj.get("return", ["patients"])),
        name=name,
        exclude_conditions=_each(exclude, "conditions", _criterion, "exclude."),
        exclude_imaging=_each(exclude, "imaging", _required_imaging, "exclude."),
        exclude_medications=_each(exclude, "medications", _criterion, "exclude."),
    )


def _required_imaging(value: Any, where: str) -> Any:
    return _imaging(value, where, required=True)


def _each(obj: dict[str, Any], key: str, parse: Any, prefix: str = "") -> tuple:
    """`parse` of every item of the list `obj[key]`, each told where it stands (for its errors)."""
    return tuple(parse(item, f"{prefix}{key}[{i}]")
                 for i, item in enumerate(_list(obj.get(key, []), f"{prefix}{key}")))


def _mapping(value: Any, where: str, allowed: set[str]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise CohortDefinitionError(where, f"expected a mapping, got {type(value).__name__}")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise CohortDefinitionError(
            where, f"unknown field(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(sorted(allowed))}"
        )
    return value


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str | dict):
        return [value]
    if not isinstance(value, list):
        raise CohortDefinitionError(where, f"expected a list, got {type(value).__name__}")
    return value


def _age(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 150:
        raise CohortDefinitionError(where, f"expected whole years between 0 and 150, got {value!r}")
    return value


def _choice(value: Any, where: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value.lower() not in allowed:
        raise CohortDefinitionError(where, f"expected one of {', '.join(allowed)}, got {value!r}")
    return value.lower()


def _date(value: Any, where: str) -> datetime.date:
    if isinstance(value, datetime.datetime):
        return value.date()
    if isinstance(value, datetime.date):
        return value
    try:
        return datetime.date.fromisoformat(str(value))
    except ValueError:
        raise CohortDefinitionError(where, f"expected a date YYYY-MM-DD, got {value!r}") from None


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise CohortDefinitionError(where, f"expected non-empty text, got {value!r}")
    return value.strip()


def _window(value: Any, where: str) -> Window | None:
    if value is None:
        return None
    obj = _mapping(value, where, {"last", "start", "end"})
    if "last" in obj:
        if "start" in obj or "end" in obj:
            raise CohortDefinitionError(where, "give either 'last' or 'start'/'end', not both")
        last = _mapping(obj["last"], f"{where}.last", {"years", "months", "days"})
        parts = {}
        for unit in ("years", "months", "days"):
            n = last.get(unit, 0)
            if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 200 * 366:
                raise CohortDefinitionError(
                    f"{where}.last.{unit}", f"expected a whole number >= 0, got {n!r}"
                )
            parts[unit] = n
        if not any(parts.values()):
            raise CohortDefinitionError(
                f"{where}.last", "expected at least one of years, months, days above 0"
            )
        return Window(last_years=parts["years"], last_months=parts["months"], last_days=parts["days"])
    start = _date(obj["start"], f"{where}.start") if obj.get("start") is not None else None
    end = _date(obj["end"], f"{where}.end") if obj.get("end") is not None else None
    if start is None and end is None:
        raise CohortDefinitionError(where, "expected 'last' or at least one of 'start', 'end'")
    if start and end and start > end:
        raise CohortDefinitionError(where, f"start {start} is after end {end}")
    return Window(start=start, end=end)


def _criterion(value: Any, where: str) -> ClinicalCriterion:
    obj = _mapping(value, where, {"codes", "text", "window"})
    codes = []
    for i, item in enumerate(_list(obj.get("codes", []), f"{where}.codes")):
        c = _mapping(item, f"{where}.codes[{i}]", {"system", "code", "display"})
        if "code" not in c:
            raise CohortDefinitionError(f"{where}.codes[{i}]", "missing 'code'")
        system = _text(c["system"], f"{where}.codes[{i}].system") if c.get("system") is not None else None
        codes.append(Code(code=_text(str(c["code"]), f"{where}.codes[{i}].code"), system=system))
    texts = tuple(
        _text(t, f"{where}.text[{i}]") for i, t in enumerate(_list(obj.get("text", []), f"{where}.text"))
    )
    if not codes and not texts:
        raise CohortDefinitionError(where, "needs at least one of 'codes' or 'text'")
    return ClinicalCriterion(tuple(codes), texts, _window(obj.get("window"), f"{where}.window"))


def _imaging(value: Any, where: str, required: bool) -> ImagingFilter:
    import re

    obj = _mapping(value, where, {"modalities", "body_parts", "window"})
    modalities = []
    for i, m in enumerate(_list(obj.get("modalities", []), f"{where}.modalities")):
        m = _text(m, f"{where}.modalities[{i}]").upper()
        if not re.match(MODALITY_PATTERN, m):
            raise CohortDefinitionError(
                f"{where}.modalities[{i}]", f"expected a DICOM modality code like CT, got {m!r}"
            )
        modalities.append(m)
    parts = tuple(
        _text(b, f"{where}.body_parts[{i}]").upper()
        for i, b in enumerate(_list(obj.get("body_parts", []), f"{where}.body_parts"))
    )
    found = ImagingFilter(tuple(modalities), parts, _window(obj.get("window"), f"{where}.window"))
    if required and found.empty:
        raise CohortDefinitionError(where, "needs at least one of 'modalities', 'body_parts', 'window'")
    return found


def _returns(value: Any) -> Returns:
    where = "return"
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list):
        value = {_choice(v, f"{where}[{i}]", COLLECTIONS): {} for i, v in enumerate(value)}
    obj = _mapping(value, where, set(COLLECTIONS))
    collections = tuple(c for c in COLLECTIONS if c in obj or c == "patients")
    studies = ImagingFilter()
    for name in ("studies", "series"):
        if obj.get(name):
            found = _imaging(obj[name], f"{where}.{name}", required=False)
            if not studies.empty and found != studies:
                raise CohortDefinitionError(f"{where}.{name}", "studies and series take the same filter")
            studies = found
    meds = _mapping(obj.get("medications") or {}, f"{where}.medications", {"prescribed", "window"})
    reports = _mapping(
        obj.get("reports") or {}, f"{where}.reports", {"category", "window", "linked_to_studies"}
    )
    docs = _mapping(obj.get("documents") or {}, f"{where}.documents", {"window", "linked_to_studies"})
    for key, holder, name in (
        ("prescribed", meds, "medications"),
        ("linked_to_studies", reports, "reports"),
        ("linked_to_studies", docs, "documents"),
    ):
        if not isinstance(holder.get(key, False), bool):
            raise CohortDefinitionError(f"{where}.{name}.{key}", "expected true or false")
    return Returns(
        collections=collections,
        studies=studies,
        medications_prescribed=meds.get("prescribed", False),
        medications_window=_window(meds.get("window"), f"{where}.medications.window"),
        report_category=_choice(
            reports.get("category", "any"), f"{where}.reports.category", REPORT_CATEGORIES
        ),
        reports_window=_window(reports.get("window"), f"{where}.reports.window"),
        reports_linked_to_studies=reports.get("linked_to_studies", False),
        documents_window=_window(docs.get("window"), f"{where}.documents.window"),
        documents_linked_to_studies=docs.get("linked_to_studies", False),
    )
