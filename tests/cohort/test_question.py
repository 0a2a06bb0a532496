"""The question parser on its own: what each kind of phrase becomes (vocabulary given by hand)."""

from __future__ import annotations

import datetime

import pytest

from dicomlake.cohort.definition import Code, Window
from dicomlake.cohort.question import parse_with_terms
from dicomlake.cohort.vocabulary import ClinicalTerms

SNOMED = "http://snomed.info/sct"


@pytest.fixture(scope="module")
def terms() -> ClinicalTerms:
    t = ClinicalTerms()
    for text, code in [
        ("osteosarcoma of bone", "307548001"),
        ("malignant neoplasm of lung", "363358000"),
        ("myocardial infarction", "22298006"),
        ("type 2 diabetes mellitus", "44054006"),
    ]:
        t.condition_texts.add(text)
        t.condition_codes[text] = {Code(code, SNOMED)}
        t.codes_by_value[code] = {Code(code, SNOMED)}
    t.medication_texts.add("metformin 500 mg oral tablet")
    return t


@pytest.mark.parametrize(
    ("phrase", "age_min", "age_max"),
    [
        ("patients over 45", 46, None),
        ("patients older than 45", 46, None),
        ("patients under 18", None, 17),
        ("patients between 30 and 50", 30, 50),
        ("patients aged 60 or older", 60, None),
        ("patients 65 and over", 65, None),
        ("patients 65+", 65, None),
        ("patients aged 40", 40, 40),
        ("patients 70 years old or younger", None, 70),
        ("patients at least forty five", 45, None),
        ("children", None, 17),
        ("adults", 18, None),
        ("patients aged between 20 and 30", 20, 30),
    ],
)
def test_ages(terms: ClinicalTerms, phrase: str, age_min: int | None, age_max: int | None) -> None:
    parsed = parse_with_terms(phrase, terms)
    assert (parsed.definition.age_min, parsed.definition.age_max, parsed.unrecognized) == (
        age_min,
        age_max,
        [],
    )


@pytest.mark.parametrize(
    ("phrase", "window"),
    [
        ("in the last two years", Window(last_years=2)),
        ("in the past 6 months", Window(last_months=6)),
        ("within the last 3 weeks", Window(last_days=21)),
        ("in the last year", Window(last_years=1)),
        ("since 2023", Window(start=datetime.date(2023, 1, 1))),
        ("in 2024", Window(start=datetime.date(2024, 1, 1), end=datetime.date(2024, 12, 31))),
        ("before March 2022", Window(end=datetime.date(2022, 2, 28))),
        ("after 2020", Window(start=datetime.date(2021, 1, 1))),
        ("since 2023-05-04", Window(start=datetime.date(2023, 5, 4))),
        ("between 2019 and 2021", Window(start=datetime.date(2019, 1, 1), end=datetime.date(2021, 12, 31))),
        ("in February 2024", Window(start=datetime.date(2024, 2, 1), end=datetime.date(2024, 2, 29))),
    ],
)
def test_windows_attach_to_the_diagnosis(terms: ClinicalTerms, phrase: str, window: Window) -> None:
    parsed = parse_with_terms(f"patients diagnosed with osteosarcoma {phrase}", terms)
    assert parsed.unrecognized == []
    assert parsed.definition.conditions[0].window == window


@pytest.mark.parametrize(
    ("phrase", "modalities", "body_parts"),
    [
        ("CT scans", ("CT",), ()),
        ("MRI", ("MR",), ()),
        ("chest x-ray", ("CR", "DX"), ("CHEST",)),
        ("brain MR", ("MR",), ("HEAD", "BRAIN")),
        ("MRI of the knee", ("MR",), ("KNEE",)),
        ("abdominal ultrasound", ("US",), ("ABDOMEN",)),
        ("head CT", ("CT",), ("HEAD",)),
    ],
)
def test_imaging_named_before_the_patients_is_returned(
    terms: ClinicalTerms, phrase: str, modalities: tuple, body_parts: tuple
) -> None:
    parsed = parse_with_terms(f"{phrase} of women", terms)
    assert parsed.unrecognized == [] and parsed.definition.sexes == ("female",)
    returned = parsed.definition.returns
    assert "studies" in returned.collections
    assert (returned.studies.modalities, returned.studies.body_parts) == (modalities, body_parts)
    assert parsed.definition.imaging == ()


def test_imaging_named_after_the_patients_is_a_criterion(terms: ClinicalTerms) -> None:
    parsed = parse_with_terms("male patients who had a chest CT in 2024", terms)
    (imaging,) = parsed.definition.imaging
    assert (imaging.modalities, imaging.body_parts, imaging.window) == (
        ("CT",),
        ("CHEST",),
        Window(start=datetime.date(2024, 1, 1), end=datetime.date(2024, 12, 31)),
    )
    assert parsed.definition.returns.collections == ("patients",)


def test_synonyms_and_collections(terms: ClinicalTerms) -> None:
    parsed = parse_with_terms("radiology reports and medications of patients with a heart attack", terms)
    (condition,) = parsed.definition.conditions
    assert condition.text == ("myocardial infarction",) and condition.codes == (Code("22298006", SNOMED),)
    returns = parsed.definition.returns
    assert (
        returns.collections == ("patients", "medications", "reports")
        and returns.report_category == "radiology"
    )
    parsed = parse_with_terms("patients with lung cancer", terms)
    assert parsed.definition.conditions[0].codes == (Code("363358000", SNOMED),)


def test_unknown_words_come_back_verbatim_in_order(terms: ClinicalTerms) -> None:
    parsed = parse_with_terms("Smokers over 50 without Diabetes, living in Oslo", terms)
    assert parsed.unrecognized == ["Smokers", "without", "living", "Oslo"]
    assert parsed.definition.age_min == 51


def test_an_unknown_diagnosis_is_not_guessed(terms: ClinicalTerms) -> None:
    parsed = parse_with_terms("patients with gout", terms)
    assert parsed.unrecognized == ["gout"] and parsed.definition.conditions == ()
