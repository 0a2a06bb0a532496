"""What a question's words can mean: the tenant's own condition and medication terms, plus fixed lists
(synonyms, modalities, body parts, number words) that the parser reads from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from dicomlake.cohort.definition import Code
from dicomlake.store.lakehouse import TenantStore

# Lay terms -> the clinical wording found in codings' display texts (matched as substrings).
CONDITION_SYNONYMS: dict[str, tuple[str, ...]] = {
    "lung cancer": ("malignant neoplasm of lung", "lung cancer", "carcinoma of lung", "neoplasm of lung"),
    "heart attack": ("myocardial infarction",),
    "heart attacks": ("myocardial infarction",),
    "mi": ("myocardial infarction",),
    "stroke": ("cerebrovascular accident", "stroke", "cerebral infarction"),
    "strokes": ("cerebrovascular accident", "stroke", "cerebral infarction"),
    "bone cancer": ("osteosarcoma", "malignant neoplasm of bone"),
    "breast cancer": ("malignant neoplasm of breast", "breast cancer", "carcinoma of breast"),
    "high blood pressure": ("hypertension",),
    "hypertensive": ("hypertension",),
    "diabetic": ("diabetes",),
    "diabetics": ("diabetes",),
    "sugar diabetes": ("diabetes",),
    "copd": ("chronic obstructive",),
    "emphysema": ("emphysema", "chronic obstructive"),
    "kidney disease": ("kidney disease", "renal disease"),
    "ckd": ("chronic kidney disease",),
    "blood clot in the lung": ("pulmonary embolism",),
    "pe": ("pulmonary embolism",),
    "broken bone": ("fracture",),
    "broken bones": ("fracture",),
    "torn acl": ("anterior cruciate ligament",),
    "acl tear": ("anterior cruciate ligament",),
    "back pain": ("back pain", "low back pain"),
    "asthmatic": ("asthma",),
    "brain tumor": ("neoplasm of brain", "glioblastoma", "glioma", "brain tumor"),
    "brain tumour": ("neoplasm of brain", "glioblastoma", "glioma", "brain tumor"),
    "pneumonia": ("pneumonia",),
    "covid": ("covid-19", "sars-cov-2"),
    "covid-19": ("covid-19", "sars-cov-2"),
}

MODALITIES: dict[str, tuple[str, ...]] = {
    "ct": ("CT",),
    "cts": ("CT",),
    "cat": ("CT",),
    "computed tomography": ("CT",),
    "mri": ("MR",),
    "mris": ("MR",),
    "mr": ("MR",),
    "mrs": ("MR",),
    "magnetic resonance": ("MR",),
    "x-ray": ("CR", "DX"),
    "x-rays": ("CR", "DX"),
    "xray": ("CR", "DX"),
    "xrays": ("CR", "DX"),
    "x ray": ("CR", "DX"),
    "x rays": ("CR", "DX"),
    "radiograph": ("CR", "DX"),
    "radiographs": ("CR", "DX"),
    "radiography": ("CR", "DX"),
    "ultrasound": ("US",),
    "ultrasounds": ("US",),
    "sonography": ("US",),
    "sonogram": ("US",),
    "pet": ("PT",),
    "mammogram": ("MG",),
    "mammograms": ("MG",),
    "mammography": ("MG",),
    "nuclear medicine": ("NM",),
    "secondary capture": ("OT",),
    "3d reconstruction": ("OT",),
    "3d reconstructions": ("OT",),
}

BODY_PARTS: dict[str, tuple[str, ...]] = {
    "chest": ("CHEST",),
    "thorax": ("CHEST",),
    "thoracic": ("CHEST",),
    "brain": ("HEAD", "BRAIN"),
    "head": ("HEAD",),
    "skull": ("HEAD", "SKULL"),
    "knee": ("KNEE",),
    "knees": ("KNEE",),
    "abdomen": ("ABDOMEN",),
    "abdominal": ("ABDOMEN",),
    "belly": ("ABDOMEN",),
    "pelvis": ("PELVIS", "ABDOMEN"),
    "pelvic": ("PELVIS", "ABDOMEN"),
    "lumbar spine": ("LSPINE",),
    "lumbar": ("LSPINE",),
    "lower back": ("LSPINE",),
    "l-spine": ("LSPINE",),
    "cervical spine": ("CSPINE",),
    "cervical": ("CSPINE",),
    "c-spine": ("CSPINE",),
    "spine": ("LSPINE", "CSPINE", "TSPINE", "SPINE"),
    "spinal": ("LSPINE", "CSPINE", "TSPINE", "SPINE"),
    "hand": ("HAND",),
    "hands": ("HAND",),
    "kidney": ("KIDNEY",),
    "kidneys": ("KIDNEY",),
    "renal": ("KIDNEY",),
    "neck": ("NECK",),
}

NUMBER_WORDS = {
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "eighteen": 18,
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
    "a": 1,
    "an": 1,
}

MONTHS = {
    name: i + 1
    for i, name in enumerate(
        (
            "january",
            "february",
            "march",
            "april",
            "may",
            "june",
            "july",
            "august",
            "september",
            "october",
            "november",
            "december",
        )
    )
}
MONTHS.update({name[:3]: number for name, number in list(MONTHS.items())})
MONTHS["sept"] = 9


def normalize(text: str) -> str:
    return re.sub(r"\s+", " ", text.lower()).strip()


@dataclass
class ClinicalTerms:
    """Condition and medication wording present in one tenant's data."""

    condition_texts: set[str] = field(default_factory=set)  # lower-cased texts and displays
    condition_codes: dict[str, set[Code]] = field(default_factory=dict)  # lower-cased text -> codes
    codes_by_value: dict[str, set[Code]] = field(default_factory=dict)  # "c40.2" -> codes
    medication_texts: set[str] = field(default_factory=set)

    def conditions_containing(self, phrase: str) -> list[str]:
        pattern = re.compile(r"(?<![a-z0-9])" + re.escape(phrase) + r"(?![a-z0-9])")
        return sorted(t for t in self.condition_texts if pattern.search(t))

    def medications_containing(self, phrase: str) -> list[str]:
        pattern = re.compile(r"(?<![a-z0-9])" + re.escape(phrase) + r"(?![a-z0-9])")
        return sorted(t for t in self.medication_texts if pattern.search(t))

    def codes_for(self, texts: list[str]) -> list[Code]:
        found: set[Code] = set()
        for text in texts:
            found |= self.condition_codes.get(text, set())
        return sorted(found, key=lambda c: (c.system or "", c.code))


def load_terms(tenant: TenantStore) -> ClinicalTerms:
    from dicomlake.sql import connect

    terms = ClinicalTerms()
    con = connect(tenant)
    try:
        rows = con.sql("""
            SELECT lower(c.text), k.system, k.code, lower(k.display)
            FROM conditions c LEFT JOIN condition_codings k ON k.condition_id = c.id""").fetchall()
        meds = con.sql("SELECT DISTINCT lower(display), lower(text) FROM medications").fetchall()
    finally:
        con.close()
    for text, system, code, display in rows:
        coded = Code(code=code, system=system) if code else None
        for wording in (text, display):
            if wording:
                terms.condition_texts.add(wording)
                if coded:
                    terms.condition_codes.setdefault(wording, set()).add(coded)
        if coded:
            terms.codes_by_value.setdefault(code.lower(), set()).add(coded)
    for display, text in meds:
        terms.medication_texts |= {t for t in (display, text) if t}
    return terms
