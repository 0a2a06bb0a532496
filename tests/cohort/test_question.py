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
    assert parsed.unrecognized == ["Smokers", "living", "Oslo"]
    assert parsed.definition.age_min == 51
    # "without Diabetes" is an exclusion, never the criterion "with diabetes"
    assert parsed.definition.conditions == ()
    assert [c.text for c in parsed.definition.exclude_conditions] == [("diabetes",)]
    # a negation with nothing it could apply to comes back with the words after it
    parsed = parse_with_terms("patients over 50 without Contrast or Smoking", terms)
    assert parsed.unrecognized == ["without Contrast", "Smoking"]
    assert parsed.definition.exclude_conditions == () and parsed.definition.age_min == 51


def test_an_unknown_diagnosis_is_not_guessed(terms: ClinicalTerms) -> None:
    parsed = parse_with_terms("patients with gout", terms)
    assert parsed.unrecognized == ["gout"] and parsed.definition.conditions == ()


@pytest.mark.parametrize(
    ("question", "conditions", "medications", "imaging"),
    [
        ("patients without diabetes", [("diabetes",)], [], []),
        ("patients with no osteosarcoma", [("osteosarcoma",)], [], []),
        ("excluding patients with a myocardial infarction", [("myocardial infarction",)], [], []),
        ("patients except those with lung cancer", [("malignant neoplasm of lung", "lung cancer",
                                                     "carcinoma of lung", "neoplasm of lung")], [], []),
        ("patients without diabetes or osteosarcoma", [("diabetes", "osteosarcoma")], [], []),
        ("patients with neither diabetes nor osteosarcoma", [("diabetes",), ("osteosarcoma",)], [], []),
        ("patients not on metformin", [], [("metformin",)], []),
        ("patients who are not taking metformin", [], [("metformin",)], []),
        ("patients who never had an MRI", [], [], [(("MR",), ())]),
        ("patients who didn't have a chest CT", [], [], [(("CT",), ("CHEST",))]),
        ("patients who have not had a brain MR or a CT", [], [], [(("MR",), ("HEAD", "BRAIN")),
                                                                  (("CT",), ())]),
    ],
)
def test_negations_become_exclusions(
    terms: ClinicalTerms, question: str, conditions: list, medications: list, imaging: list
) -> None:
    parsed = parse_with_terms(question, terms)
    d = parsed.definition
    assert parsed.unrecognized == []
    assert (d.conditions, d.medications, d.imaging) == ((), (), ())
    assert [c.text for c in d.exclude_conditions] == conditions
    assert [m.text for m in d.exclude_medications] == medications
    assert [(i.modalities, i.body_parts) for i in d.exclude_imaging] == imaging


def test_a_negation_reaches_only_what_follows_it(terms: ClinicalTerms) -> None:
    parsed = parse_with_terms(
        "women with osteosarcoma without diabetes who had a CT scan but never an MRI since 2020", terms
    )
    d = parsed.definition
    assert parsed.unrecognized == [] and d.sexes == ("female",)
    assert [c.text for c in d.conditions] == [("osteosarcoma",)]
    assert [c.text for c in d.exclude_conditions] == [("diabetes",)]
    assert [(i.modalities, i.window) for i in d.imaging] == [(("CT",), None)]
    # the window belongs to the excluded MRI (the nearest thing before it)
    assert [(i.modalities, i.window) for i in d.exclude_imaging] == [
        (("MR",), Window(start=datetime.date(2020, 1, 1)))
    ]
    assert any(u.startswith("'but never an MRI': excluded") for u in parsed.understood)
    # "and with" ends the negated list: lung cancer is required, not excluded
    d = parse_with_terms("patients without diabetes and with lung cancer", terms).definition
    assert [c.text[0] for c in d.conditions] == ["malignant neoplasm of lung"]
    assert [c.text for c in d.exclude_conditions] == [("diabetes",)]


def test_exclusions_round_trip_through_the_definition_format(terms: ClinicalTerms) -> None:
    from dicomlake.cohort.definition import parse_definition

    d = parse_with_terms("men without diabetes, not on metformin, who never had a knee MRI", terms).definition
    assert d.as_json()["exclude"] == {
        "conditions": [{"codes": [{"system": SNOMED, "code": "44054006"}], "text": ["diabetes"]}],
        "imaging": [{"modalities": ["MR"], "body_parts": ["KNEE"]}],
        "medications": [{"text": ["metformin"]}],
    }
    assert parse_definition(d.as_json()) == d
