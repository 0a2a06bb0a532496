"""Plain-language cohort questions -> cohort definitions, by a deterministic parser.

    "all medications prescribed, with all CT scan documents and associated radiology reports,
     for all patients over 45 diagnosed with osteosarcoma in the last two years"

How it reads a question:
1. Words are matched left to right, longest phrase first, against: time windows ("in the last two
   years", "since 2023", "in 2024", "before March 2022"), ages ("over 45", "between 30 and 50",
   "aged 60 or older"), imaging (modalities and body parts: "CT scans", "chest x-ray", "brain MR"),
   collections ("medications", "radiology reports", "documents", "studies"), sex and subject words
   ("women", "male patients"), and the tenant's own condition and medication wording (codes,
   displays, texts) plus a synonym list ("heart attack" ~ myocardial infarction).
2. What comes before the first patient description (a subject word, an age, a sex, a diagnosis) is
   what to return; imaging named there filters the returned studies ("CT scan documents" are the
   documents of CT studies), not the cohort: in the seed question the medications of every patient
   over 45 with osteosarcoma are asked for, with or without a CT (`CohortResult.patients_with_studies`
   says who has a returned study). After it, imaging is a criterion ("women who had a brain MR").
3. A time window belongs to the nearest thing before it (a diagnosis, an imaging criterion, a
   returned collection), else to the next one.
4. A negation ("without", "with no", "not", "no", "never", "excluding", "except", "but not",
   "didn't" ...) turns the diagnosis, medication or imaging right after it (only stop words, or a
   plain "patients", between) into an exclusion: "patients without diabetes", "not on metformin",
   "who never had an MRI", "excluding patients with lung cancer". It carries over a list joined by
   "or", "and" or "nor" ("without diabetes or hypertension": neither). A negation with nothing it
   could apply to is reported verbatim with the words after it ("without contrast").
5. Every word that is neither matched nor a stop word is reported back verbatim in `unrecognized`;
   negations are never stop words, so one that was not applied is always reported.
"""

from __future__ import annotations

import calendar
import datetime
import re
from dataclasses import dataclass, field
from typing import Any

from dicomlake.cohort.definition import (
    ClinicalCriterion,
    Code,
    CohortDefinition,
    ImagingFilter,
    Returns,
    Window,
)
from dicomlake.cohort.vocabulary import (
    BODY_PARTS,
    CONDITION_SYNONYMS,
    MODALITIES,
    MONTHS,
    NUMBER_WORDS,
    ClinicalTerms,
    load_terms,
)

STOP_WORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "all",
        "any",
        "every",
        "each",
        "of",
        "for",
        "with",
        "and",
        "or",
        "who",
        "whom",
        "whose",
        "that",
        "which",
        "were",
        "was",
        "is",
        "are",
        "be",
        "been",
        "being",
        "have",
        "has",
        "had",
        "having",
        "did",
        "do",
        "does",
        "diagnosed",
        "diagnosis",
        "by",
        "to",
        "in",
        "on",
        "at",
        "from",
        "show",
        "list",
        "find",
        "give",
        "get",
        "return",
        "me",
        "please",
        "their",
        "them",
        "those",
        "these",
        "there",
        "what",
        "how",
        "many",
        "also",
        "plus",
        "as",
        "well",
        "along",
        "together",
        "underwent",
        "undergone",
        "received",
        "got",
        "taking",
        "take",
        "including",
        "include",
        "includes",
        "years",
        "year",
        "old",
        "aged",
        "age",
        "ages",
        "both",
        "everyone",
        "anyone",
        "ever",
        "currently",
        "who've",
        "they",
        "she",
        "he",
        "it",
        "its",
        "known",
        "confirmed",
        "recorded",
        "documented",
    ]
)
# Never the start or end of a diagnosis phrase, though displays contain them ("... without complications").
NEGATIONS = frozenset({"without", "not", "no", "never", "except", "excluding", "non", "unspecified", "other"})
# Phrases that negate what follows them (longest first where one begins another).
NEGATION_PHRASES: tuple[tuple[str, ...], ...] = (
    ("with", "no"),
    ("but", "not"),
    ("but", "no"),
    ("but", "never"),
    ("except", "for"),
    ("other", "than"),
    ("without",),
    ("no",),
    ("not",),
    ("never",),
    ("neither",),
    ("nor",),
    ("excluding",),
    ("exclude",),
    ("except",),
    ("didn't",),
    ("don't",),
    ("doesn't",),
    ("haven't",),
    ("hasn't",),
    ("hadn't",),
    ("isn't",),
    ("aren't",),
    ("wasn't",),
    ("weren't",),
)
NEGATION_WORDS = frozenset(p[0] for p in NEGATION_PHRASES if len(p) == 1)
NEGATABLE = ("condition", "medication", "imaging")
# Between the items of a negated list: "without diabetes, hypertension or lung cancer".
LIST_JOINERS = frozenset({"and", "or", "nor", "either", "a", "an", "any", "the"})
LINK_WORDS = frozenset({"associated", "related", "linked", "corresponding", "matching", "their"})
SUBJECTS: dict[str, tuple[str | None, int | None, int | None]] = {
    # word -> (sex, min age, max age)
    "patients": (None, None, None),
    "patient": (None, None, None),
    "people": (None, None, None),
    "persons": (None, None, None),
    "individuals": (None, None, None),
    "subjects": (None, None, None),
    "cases": (None, None, None),
    "anyone": (None, None, None),
    "adults": (None, 18, None),
    "children": (None, None, 17),
    "kids": (None, None, 17),
    "pediatric": (None, None, 17),
    "paediatric": (None, None, 17),
    "minors": (None, None, 17),
    "elderly": (None, 65, None),
    "seniors": (None, 65, None),
    "women": ("female", None, None),
    "woman": ("female", None, None),
    "females": ("female", None, None),
    "female": ("female", None, None),
    "ladies": ("female", None, None),
    "girls": ("female", None, 17),
    "men": ("male", None, None),
    "man": ("male", None, None),
    "males": ("male", None, None),
    "male": ("male", None, None),
    "gentlemen": ("male", None, None),
    "boys": ("male", None, 17),
}
COLLECTION_PHRASES: dict[str, tuple[str, dict[str, Any]]] = {
    "medications": ("medications", {}),
    "medication": ("medications", {}),
    "meds": ("medications", {}),
    "drugs": ("medications", {}),
    "medicines": ("medications", {}),
    "prescriptions": ("medications", {"prescribed": True}),
    "medication requests": ("medications", {"prescribed": True}),
    "prescribed": ("medications", {"prescribed": True}),
    "reports": ("reports", {}),
    "report": ("reports", {}),
    "diagnostic reports": ("reports", {}),
    "radiology reports": ("reports", {"category": "radiology"}),
    "radiology report": ("reports", {"category": "radiology"}),
    "imaging reports": ("reports", {"category": "radiology"}),
    "lab reports": ("reports", {"category": "laboratory"}),
    "laboratory reports": ("reports", {"category": "laboratory"}),
    "pathology reports": ("reports", {"category": "pathology"}),
    "documents": ("documents", {}),
    "document": ("documents", {}),
    "docs": ("documents", {}),
    "document references": ("documents", {}),
    "clinical documents": ("documents", {}),
    "studies": ("studies", {}),
    "study": ("studies", {}),
    "scans": ("studies", {}),
    "scan": ("studies", {}),
    "exams": ("studies", {}),
    "exam": ("studies", {}),
    "examinations": ("studies", {}),
    "images": ("studies", {}),
    "imaging": ("studies", {}),
    "imaging studies": ("studies", {}),
    "series": ("series", {}),
}
SCAN_NOUNS = frozenset({"scan", "scans", "images", "image", "imaging", "exam", "exams", "study", "studies"})
UNITS = {
    "year": "years",
    "years": "years",
    "yr": "years",
    "yrs": "years",
    "month": "months",
    "months": "months",
    "week": "weeks",
    "weeks": "weeks",
    "day": "days",
    "days": "days",
}
_TOKEN = re.compile(r"[A-Za-z0-9]+(?:[-.'/][A-Za-z0-9]+)*\+?")


@dataclass
class Token:
    text: str  # as written
    word: str  # lower case
    start: int
    end: int


@dataclass
class Item:
    kind: str  # window age sex subject condition medication imaging collection link or negation
    start: int  # token index
    end: int  # token index after the last
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class ParsedQuestion:
    definition: CohortDefinition
    understood: list[str]
    unrecognized: list[str]
    backend: str = "parser"


def tokenize(question: str) -> list[Token]:
    return [Token(m.group(), m.group().lower(), m.start(), m.end()) for m in _TOKEN.finditer(question)]


def _number(word: str) -> int | None:
    if word.isdigit():
        return int(word)
    return NUMBER_WORDS.get(word)


class _Reader:
    """Recognizers over a token list; each returns an Item spanning tokens[i:j], or None."""

    def __init__(self, tokens: list[Token], terms: ClinicalTerms) -> None:
        self.tokens, self.terms = tokens, terms
        self.words = [t.word for t in tokens]

    def w(self, i: int) -> str:
        return self.words[i] if 0 <= i < len(self.words) else ""

    def seq(self, i: int, *options: tuple[str, ...]) -> int | None:
        """Length of the first option (a tuple of words) that starts at i."""
        for option in options:
            if tuple(self.words[i : i + len(option)]) == option:
                return len(option)
        return None

    # -- time windows ---------------------------------------------------------------------------
    def window(self, i: int) -> Item | None:
        for reader in (self._relative, self._year_or_month, self._range):
            found = reader(i)
            if found:
                return found
        return None

    def _relative(self, i: int) -> Item | None:
        lead = self.seq(
            i,
            ("in", "the", "last"),
            ("in", "the", "past"),
            ("within", "the", "last"),
            ("within", "the", "past"),
            ("over", "the", "last"),
            ("over", "the", "past"),
            ("during", "the", "last"),
            ("during", "the", "past"),
            ("in", "last"),
            ("in", "past"),
            ("within", "the"),
            ("within",),
            ("the", "last"),
            ("the", "past"),
            ("last",),
            ("past",),
        )
        if lead is None:
            return None
        j = i + lead
        n = _number(self.w(j))
        if n is not None and UNITS.get(self.w(j + 1)):
            unit, end = UNITS[self.w(j + 1)], j + 2
        elif UNITS.get(self.w(j)):  # "in the last year"
            n, unit, end = 1, UNITS[self.w(j)], j + 1
        else:
            return None
        if n <= 0:
            return None
        parts = {"years": 0, "months": 0, "days": 0}
        if unit == "weeks":
            parts["days"] = 7 * n
        else:
            parts[unit] = n
        window = Window(last_years=parts["years"], last_months=parts["months"], last_days=parts["days"])
        return Item("window", i, end, {"window": window})

    def _date_at(self, i: int) -> tuple[int, datetime.date, datetime.date] | None:
        """A year, month+year or ISO date at i: (tokens used, first day, last day)."""
        word = self.w(i)
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", word):
            try:
                day = datetime.date.fromisoformat(word)
            except ValueError:
                return None
            return 1, day, day
        if word in MONTHS and re.fullmatch(r"(19|20)\d\d", self.w(i + 1)):
            year, month = int(self.w(i + 1)), MONTHS[word]
            return (
                2,
                datetime.date(year, month, 1),
                datetime.date(year, month, calendar.monthrange(year, month)[1]),
            )
        if re.fullmatch(r"(19|20)\d\d", word):
            year = int(word)
            return 1, datetime.date(year, 1, 1), datetime.date(year, 12, 31)
        return None

    def _year_or_month(self, i: int) -> Item | None:
        word = self.w(i)
        ops = {
            "in": "in",
            "during": "in",
            "since": "since",
            "from": "since",
            "after": "after",
            "before": "before",
            "until": "until",
            "through": "until",
            "prior": "before",
        }
        if word not in ops:
            return None
        j = i + 1 + (1 if word == "prior" and self.w(i + 1) == "to" else 0)
        if word == "prior" and j == i + 1:
            return None
        found = self._date_at(j)
        if not found:
            return None
        used, first, last = found
        op = ops[word]
        if word == "from" and self.w(j + used) in ("to", "until", "through"):
            return None  # a range: _range reads it
        window = {
            "in": Window(start=first, end=last),
            "since": Window(start=first),
            "after": Window(start=last + datetime.timedelta(days=1)),
            "before": Window(end=first - datetime.timedelta(days=1)),
            "until": Window(end=last),
        }[op]
        return Item("window", i, j + used, {"window": window})

    def _range(self, i: int) -> Item | None:
        if self.w(i) not in ("between", "from"):
            return None
        first = self._date_at(i + 1)
        if not first:
            return None
        k = i + 1 + first[0]
        if self.w(k) not in ("and", "to", "until", "through"):
            return None
        second = self._date_at(k + 1)
        if not second or second[2] < first[1]:
            return None
        return Item("window", i, k + 1 + second[0], {"window": Window(start=first[1], end=second[2])})

    # -- ages -----------------------------------------------------------------------------------
    def age(self, i: int) -> Item | None:
        word = self.w(i)
        lead = self.seq(
            i,
            ("older", "than"),
            ("younger", "than"),
            ("more", "than"),
            ("less", "than"),
            ("at", "least"),
            ("at", "most"),
            ("over", "the", "age", "of"),
            ("under", "the", "age", "of"),
            ("above", "the", "age", "of"),
            ("below", "the", "age", "of"),
            ("over",),
            ("under",),
            ("above",),
            ("below",),
        )
        if lead:
            n = self._age_number(i + lead)
            if n is None:
                return None
            value, end = n
            first = self.words[i]
            if first in ("over", "above", "older") or (first == "more"):
                bounds = (value + 1, None)
            elif first in ("under", "below", "younger", "less"):
                bounds = (None, value - 1)
            elif self.words[i + 1] == "least":
                bounds = (value, None)
            else:
                bounds = (None, value)
            return Item("age", i, self._years_old(end), {"min": bounds[0], "max": bounds[1]})
        bare = word.rstrip("+")
        if (
            word in ("between", "aged")
            or (_number(bare) is not None and not bare.isalpha())
            or word in NUMBER_WORDS
        ):
            j = i + (1 if word in ("aged", "between") else 0)
            if word == "aged" and self.w(j) == "between":
                j += 1
            if self.w(j - 1) == "between" or word == "between":
                a = self._age_number(j)
                if a and self.w(a[1]) in ("and", "to"):
                    b = self._age_number(a[1] + 1)
                    if b and a[0] <= b[0]:
                        return Item("age", i, self._years_old(b[1]), {"min": a[0], "max": b[0]})
                return None
            a = self._age_number(j)
            if not a:
                return None
            value, end = a
            tail = self.seq(
                end,
                ("or", "older"),
                ("or", "over"),
                ("and", "older"),
                ("and", "over"),
                ("or", "above"),
                ("years", "or", "older"),
                ("years", "and", "older"),
                ("years", "old", "or", "older"),
                ("or", "younger"),
                ("and", "younger"),
                ("or", "under"),
                ("and", "under"),
                ("years", "or", "younger"),
                ("years", "old", "or", "younger"),
            )
            if tail:
                younger = self.words[end + tail - 1] in ("younger", "under")
                bounds = (None, value) if younger else (value, None)
                return Item("age", i, end + tail, {"min": bounds[0], "max": bounds[1]})
            if self.tokens[end - 1].text.endswith("+"):
                return Item("age", i, end, {"min": value, "max": None})
            if word == "aged" or self.seq(end, ("years", "old"), ("year", "old")):
                return Item("age", i, self._years_old(end), {"min": value, "max": value})
        return None

    def _age_number(self, i: int) -> tuple[int, int] | None:
        word = self.w(i).rstrip("+")
        n = _number(word) if word not in ("a", "an") else None
        if n is None or not 0 <= n <= 130:
            return None
        # "forty five"
        if n >= 20 and n % 10 == 0 and self.w(i + 1) in NUMBER_WORDS and NUMBER_WORDS[self.w(i + 1)] < 10:
            return n + NUMBER_WORDS[self.w(i + 1)], i + 2
        return n, i + 1

    def _years_old(self, j: int) -> int:
        extra = self.seq(j, ("years", "old"), ("year", "old"), ("years", "of", "age"), ("yo",), ("years",))
        return j + (extra or 0)

    # -- the rest -------------------------------------------------------------------------------
    def phrase(self, i: int, table: dict[str, Any], longest: int = 3) -> tuple[int, Any] | None:
        for n in range(longest, 0, -1):
            key = " ".join(self.words[i : i + n])
            if len(self.words[i : i + n]) == n and key in table:
                return n, table[key]
        return None

    def imaging(self, i: int) -> Item | None:
        # "US" is ultrasound only when written in capitals (else it is the pronoun).
        if self.w(i) == "us" and self.tokens[i].text != "US":
            return None
        j, modalities, parts = i, [], []
        while j < len(self.words):
            if self.w(j) == "us" and self.tokens[j].text == "US":
                modalities.append("US")
                j += 1
                continue
            found = self.phrase(j, MODALITIES)
            if found:
                modalities += found[1]
                j += found[0]
                continue
            of = self.seq(j, ("of", "the"), ("of",)) if modalities and not parts else None
            found = self.phrase(j + (of or 0), BODY_PARTS, longest=2)
            if found and of:  # "MRI of the knee"
                j += of
            if found and (modalities or parts or self._imaging_follows(j + found[0])):
                parts += found[1]
                j += found[0]
                continue
            break
        if not modalities and not parts:
            return None
        while self.w(j) in SCAN_NOUNS:
            j += 1
        return Item(
            "imaging",
            i,
            j,
            {"modalities": list(dict.fromkeys(modalities)), "body_parts": list(dict.fromkeys(parts))},
        )

    def _imaging_follows(self, j: int) -> bool:
        # A body part alone ("chest") is imaging only next to a modality or a scan noun.
        return (
            bool(self.phrase(j, MODALITIES))
            or self.w(j) in SCAN_NOUNS
            or (self.w(j) == "us" and self.tokens[j].text == "US")
        )

    def collection(self, i: int) -> Item | None:
        found = self.phrase(i, COLLECTION_PHRASES, longest=2)
        if not found:
            return None
        n, (name, extras) = found
        return Item("collection", i, i + n, {"name": name, **extras})

    def subject(self, i: int) -> Item | None:
        word = self.w(i)
        if word not in SUBJECTS:
            return None
        sex, lo, hi = SUBJECTS[word]
        return Item("subject", i, i + 1, {"sex": sex, "min": lo, "max": hi})

    def condition(self, i: int) -> Item | None:
        if self.w(i) in STOP_WORDS:
            return None
        code = self.terms.codes_by_value.get(self.w(i))
        if code:
            return Item(
                "condition",
                i,
                i + 1,
                {
                    "texts": [],
                    "codes": sorted(code, key=lambda c: (c.system or "", c.code)),
                    "phrase": self.tokens[i].text,
                },
            )
        for n in range(min(6, len(self.words) - i), 0, -1):
            words = self.words[i : i + n]
            if words[-1] in STOP_WORDS or all(w in STOP_WORDS or w.isdigit() for w in words):
                continue
            if words[0] in NEGATIONS or words[-1] in NEGATIONS or words[0] in NEGATION_WORDS:
                continue
            phrase = " ".join(words)
            if phrase in CONDITION_SYNONYMS:
                targets = list(CONDITION_SYNONYMS[phrase])
                texts = [t for target in targets for t in self.terms.conditions_containing(target)]
                return Item(
                    "condition",
                    i,
                    i + n,
                    {"texts": targets, "codes": self.terms.codes_for(texts), "phrase": phrase},
                )
            for candidate in (phrase, phrase[:-1] if phrase.endswith("s") and len(phrase) > 4 else None):
                if candidate and len(candidate) >= 4:
                    texts = self.terms.conditions_containing(candidate)
                    if texts:
                        return Item(
                            "condition",
                            i,
                            i + n,
                            {"texts": [candidate], "codes": self.terms.codes_for(texts), "phrase": phrase},
                        )
        return None

    def negation(self, i: int) -> Item | None:
        n = self.seq(i, *NEGATION_PHRASES)
        return Item("negation", i, i + n) if n else None

    def medication(self, i: int) -> Item | None:
        if self.w(i) in STOP_WORDS or self.w(i) in COLLECTION_PHRASES:
            return None
        for n in range(min(4, len(self.words) - i), 0, -1):
            words = self.words[i : i + n]
            if words[-1] in STOP_WORDS:
                continue
            phrase = " ".join(words)
            if len(phrase) >= 4 and self.terms.medications_containing(phrase):
                return Item("medication", i, i + n, {"texts": [phrase]})
        return None


# Ties between recognizers of the same length go to the earlier one here.
_ORDER = ("window", "age", "imaging", "collection", "subject", "condition", "medication", "negation")


def read_items(tokens: list[Token], terms: ClinicalTerms) -> tuple[list[Item], list[tuple[int, int]]]:
    """Items found, and the (start, end) token runs nobody could read (stop words excluded)."""
    reader = _Reader(tokens, terms)
    items: list[Item] = []
    unknown: set[int] = set()
    i = 0
    while i < len(tokens):
        candidates = [found for kind in _ORDER if (found := getattr(reader, kind)(i))]
        if candidates:
            best = max(candidates, key=lambda it: (it.end - it.start, -_ORDER.index(it.kind)))
            items.append(best)
            i = best.end
            continue
        word = reader.w(i)
        if word in LINK_WORDS:
            items.append(Item("link", i, i + 1))
        elif word == "or":
            items.append(Item("or", i, i + 1))
        elif word not in STOP_WORDS:
            unknown.add(i)
        i += 1
    items = _apply_negations(items, unknown, reader.words)
    runs: list[tuple[int, int]] = []
    for i in sorted(unknown):
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return items, runs


def _plain_subject(it: Item) -> bool:
    return it.kind == "subject" and not any(it.data[k] for k in ("sex", "min", "max"))


def _apply_negations(items: list[Item], unknown: set[int], words: list[str]) -> list[Item]:
    """Mark what each negation applies to (`negated`, and `negation_start`: the token it begins
    at); a negation that applies to nothing joins `unknown`. The negation items are dropped."""

    def clear(a: int, b: int) -> bool:  # nothing unread between token a and token b
        return not any(a <= u < b for u in unknown)

    for k, it in enumerate(items):
        if it.kind != "negation":
            continue
        j = k + 1
        while j < len(items) and _plain_subject(items[j]):  # "excluding patients with ..."
            j += 1
        target = items[j] if j < len(items) else None
        if target is None or target.kind not in NEGATABLE or "negated" in target.data:
            unknown.update(range(it.start, it.end))
            continue
        if not clear(it.end, target.start):
            unknown.update(range(it.start, it.end))
            continue
        target.data.update(negated=True, negation_start=it.start)
        m = j
        while True:  # the rest of a list joined by and / or / nor
            n = m + 1
            if n < len(items) and items[n].kind == "or":
                n += 1
            if (
                n < len(items)
                and items[n].kind in NEGATABLE
                and "negated" not in items[n].data
                and all(w in LIST_JOINERS for w in words[items[m].end : items[n].start])
            ):
                items[n].data.update(negated=True)
                m = n
            else:
                break
    return [it for it in items if it.kind != "negation"]


def _describe_window(window: Window) -> str:
    if window.relative:
        parts = [
            f"{n} {unit}"
            for n, unit in (
                (window.last_years, "years"),
                (window.last_months, "months"),
                (window.last_days, "days"),
            )
            if n
        ]
        return "in the last " + " ".join(parts) + " before the as-of date"
    if window.start and window.end:
        return f"from {window.start} to {window.end}"
    return f"from {window.start}" if window.start else f"up to {window.end}"


def build_definition(
    question: str, tokens: list[Token], items: list[Item]
) -> tuple[CohortDefinition, list[str]]:
    """Turn the items into a definition, and say in words how each was understood."""
    understood: list[str] = []
    boundary = next(
        (
            k
            for k, it in enumerate(items)
            if it.kind in ("subject", "age", "condition", "medication") or it.data.get("negated")
        ),
        len(items),
    )
    age_min: int | None = None
    age_max: int | None = None
    sexes: list[str] = []
    conditions: list[dict[str, Any]] = []
    imaging: list[dict[str, Any]] = []
    medications: list[dict[str, Any]] = []
    excluded: dict[str, list[dict[str, Any]]] = {"condition": [], "medication": [], "imaging": []}
    collections: list[str] = []
    returns: dict[str, Any] = {
        "studies": None,
        "prescribed": False,
        "category": "any",
        "reports_linked": False,
        "documents_linked": False,
        "windows": {},
    }
    attachables: list[tuple[int, dict[str, Any]]] = []  # item index -> holder of a "window"
    pending_or = False
    previous_kind: tuple[str, bool] | None = None  # the last condition/medication: (kind, negated)

    def span(it: Item) -> str:
        first = it.data.get("negation_start", it.start)
        return question[tokens[first].start : tokens[it.end - 1].end]

    for k, it in enumerate(items):
        in_return = k < boundary
        previous = items[k - 1] if k else None
        if it.kind == "age":
            age_min = it.data["min"] if it.data["min"] is not None else age_min
            age_max = it.data["max"] if it.data["max"] is not None else age_max
            understood.append(
                f"'{span(it)}': age at the as-of date"
                + (f" >= {it.data['min']}" if it.data["min"] is not None else "")
                + (f" <= {it.data['max']}" if it.data["max"] is not None else "")
            )
        elif it.kind == "subject":
            if it.data["sex"] and it.data["sex"] not in sexes:
                sexes.append(it.data["sex"])
            age_min = it.data["min"] if it.data["min"] is not None else age_min
            age_max = it.data["max"] if it.data["max"] is not None else age_max
            note = ", ".join(
                filter(
                    None,
                    [
                        it.data["sex"],
                        it.data["min"] is not None and f"age >= {it.data['min']}",
                        it.data["max"] is not None and f"age <= {it.data['max']}",
                    ],
                )
            )
            understood.append(f"'{span(it)}': patients" + (f" ({note})" if note else ""))
        elif it.kind in ("condition", "medication"):
            negated = bool(it.data.get("negated"))
            positive = conditions if it.kind == "condition" else medications
            holders = excluded[it.kind] if negated else positive
            codes_found = list(it.data.get("codes", []))
            if pending_or and holders and previous_kind == (it.kind, negated):  # "X or Y": one criterion
                holder = holders[-1]
                holder["texts"] += it.data["texts"]
                holder["codes"] += codes_found
            else:
                holder = {"texts": list(it.data["texts"]), "codes": codes_found, "window": None}
                holders.append(holder)
            attachables.append((k, holder))
            if it.kind == "condition":
                codes = ", ".join(f"{c.system or '?'}|{c.code}" for c in codes_found)
                codes = codes or "no codes in the data"
                what = f"diagnosis matching {it.data['texts'] or []} (codes: {codes})"
            else:
                what = f"a medication matching {it.data['texts']}"
            understood.append(f"'{span(it)}': " + (f"excluded: patients with {what}" if negated else what))
            previous_kind = (it.kind, negated)
        elif it.kind == "imaging" and it.data.get("negated"):
            desc = "/".join(it.data["modalities"] or ["any modality"]) + (
                " of " + "/".join(it.data["body_parts"]) if it.data["body_parts"] else ""
            )
            holder = {"modalities": it.data["modalities"], "body_parts": it.data["body_parts"]}
            holder["window"] = None
            excluded["imaging"].append(holder)
            attachables.append((k, holder))
            understood.append(f"'{span(it)}': excluded: patients who had a {desc} study")
        elif it.kind == "imaging":
            follows_link = previous is not None and previous.kind == "link" and previous.end == it.start
            desc = "/".join(it.data["modalities"] or ["any modality"]) + (
                " of " + "/".join(it.data["body_parts"]) if it.data["body_parts"] else ""
            )
            nxt = items[k + 1] if k + 1 < len(items) else None
            if in_return or follows_link:
                returns["studies"] = {
                    "modalities": it.data["modalities"],
                    "body_parts": it.data["body_parts"],
                    "window": None,
                }
                if "studies" not in collections:
                    collections.append("studies")
                attachables.append((k, returns["studies"]))
                understood.append(f"'{span(it)}': return the cohort's {desc} studies")
                if (
                    nxt
                    and nxt.kind == "collection"
                    and nxt.start == it.end
                    and nxt.data["name"] in ("reports", "documents")
                ):
                    returns[f"{nxt.data['name']}_linked"] = True
            else:
                holder = {
                    "modalities": it.data["modalities"],
                    "body_parts": it.data["body_parts"],
                    "window": None,
                }
                imaging.append(holder)
                attachables.append((k, holder))
                understood.append(f"'{span(it)}': patients who had a {desc} study")
        elif it.kind == "collection":
            name = it.data["name"]
            if name not in collections:
                collections.append(name)
            if it.data.get("prescribed"):
                returns["prescribed"] = True
            if it.data.get("category"):
                returns["category"] = it.data["category"]
            linked = previous is not None and previous.kind == "link"
            if name in ("reports", "documents") and linked:
                returns[f"{name}_linked"] = True
            holder = returns["windows"].setdefault(name, {"window": None})
            if name == "studies" and returns["studies"] is not None:
                holder = returns["studies"]
            attachables.append((k, holder))
            understood.append(
                f"'{span(it)}': return {name}"
                + (" (prescriptions)" if it.data.get("prescribed") else "")
                + (f" ({it.data['category']})" if it.data.get("category") else "")
            )
        pending_or = it.kind == "or" or (pending_or and it.kind == "link")

    # Windows: to the nearest attachable item before, else after.
    for k, it in enumerate(items):
        if it.kind != "window":
            continue
        before = [a for a in attachables if a[0] < k]
        after = [a for a in attachables if a[0] > k]
        target = before[-1] if before else (after[0] if after else None)
        if target is None:
            understood.append(f"'{span(it)}': a time window, but nothing it could apply to")
            continue
        target[1]["window"] = it.data["window"]
        understood.append(
            f"'{span(it)}': {_describe_window(it.data['window'])}, for '{span(items[target[0]])}'"
        )
    for name in ("reports", "documents"):
        if returns[f"{name}_linked"] and name in collections:
            understood.append(f"{name}: only those linked to the returned studies")
    if returns["prescribed"] and "medications" not in collections:
        collections.append("medications")

    studies = returns["studies"] or {"modalities": [], "body_parts": [], "window": None}
    if "studies" in collections and returns["studies"] is None:
        studies["window"] = returns["windows"].get("studies", {}).get("window")
    definition = CohortDefinition(
        age_min=age_min,
        age_max=age_max,
        sexes=tuple(sexes),
        conditions=tuple(
            ClinicalCriterion(tuple(_unique_codes(c["codes"])), tuple(dict.fromkeys(c["texts"])), c["window"])
            for c in conditions
        ),
        imaging=tuple(
            ImagingFilter(tuple(i["modalities"]), tuple(i["body_parts"]), i["window"]) for i in imaging
        ),
        medications=tuple(ClinicalCriterion((), tuple(m["texts"]), m["window"]) for m in medications),
        exclude_conditions=tuple(
            ClinicalCriterion(tuple(_unique_codes(c["codes"])), tuple(dict.fromkeys(c["texts"])), c["window"])
            for c in excluded["condition"]
        ),
        exclude_imaging=tuple(
            ImagingFilter(tuple(i["modalities"]), tuple(i["body_parts"]), i["window"])
            for i in excluded["imaging"]
        ),
        exclude_medications=tuple(
            ClinicalCriterion((), tuple(dict.fromkeys(m["texts"])), m["window"])
            for m in excluded["medication"]
        ),
        returns=Returns(
            collections=tuple(
                c
                for c in ("patients", "studies", "series", "medications", "reports", "documents")
                if c in collections or c == "patients"
            ),
            studies=ImagingFilter(
                tuple(studies["modalities"]), tuple(studies["body_parts"]), studies["window"]
            ),
            medications_prescribed=returns["prescribed"],
            medications_window=returns["windows"].get("medications", {}).get("window"),
            report_category=returns["category"],
            reports_window=returns["windows"].get("reports", {}).get("window"),
            reports_linked_to_studies=returns["reports_linked"] and "studies" in collections,
            documents_window=returns["windows"].get("documents", {}).get("window"),
            documents_linked_to_studies=returns["documents_linked"] and "studies" in collections,
        ),
    )
    return definition, understood


def _unique_codes(codes: list[Code]) -> list[Code]:
    return sorted(set(codes), key=lambda c: (c.system or "", c.code))


def parse_with_terms(question: str, terms: ClinicalTerms) -> ParsedQuestion:
    tokens = tokenize(question)
    items, unknown = read_items(tokens, terms)
    definition, understood = build_definition(question, tokens, items)
    unrecognized = [question[tokens[a].start : tokens[b - 1].end] for a, b in unknown]
    return ParsedQuestion(definition, understood, unrecognized)


def parse_question(question: str, tenant: Any, llm: Any = None) -> ParsedQuestion:
    """Parse with the tenant's vocabulary; with an LLM backend, ask it when words were left over."""
    if not question or not question.strip():
        from dicomlake.cohort.definition import CohortDefinitionError

        raise CohortDefinitionError("question", "is empty")
    terms = load_terms(tenant)
    parsed = parse_with_terms(question, terms)
    if llm is not None and parsed.unrecognized:
        return llm.translate(question, terms, parsed)
    return parsed
