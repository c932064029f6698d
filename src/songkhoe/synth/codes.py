"""The terminology the synthetic records use: LOINC with UCUM units, SNOMED CT, ICD-10, ATC.

Observations follow the FHIR R4 vital-signs profile (http://hl7.org/fhir/R4/observation-vitalsigns.html):
category ``vital-signs``, the profile's LOINC code, a UCUM ``valueQuantity``, and blood pressure
as the panel 85354-9 with systolic 8480-6 and diastolic 8462-4 components in mm[Hg].
Laboratory results use the LOINC codes for results in SI units, as Vietnamese laboratories
report them (mmol/L). Smoking status uses LOINC 72166-2 with the SNOMED CT answers of the
US Core smoking-status value set; alcohol use LOINC 11331-6 with SNOMED CT 219006 / 105542008;
physical activity LOINC 82290-8 in min/wk (the Physical Activity IG's "exercise vital sign").
Diagnoses use ICD-10 (the classification Vietnamese facilities report in, Decision 4469/QĐ-BYT)
and medicines the WHO ATC classification.
"""

from __future__ import annotations

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
ATC = "http://www.whocc.no/atc"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ORG_TYPE = "http://terminology.hl7.org/CodeSystem/organization-type"
PRACTITIONER_ROLE = "http://terminology.hl7.org/CodeSystem/practitioner-role"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"

# Quantities: key -> (LOINC, display, Vietnamese text, UCUM unit, category, decimals)
QUANTITIES: dict[str, tuple[str, str, str, str, str, int]] = {
    "height": ("8302-2", "Body height", "Chiều cao", "cm", "vital-signs", 1),
    "weight": ("29463-7", "Body weight", "Cân nặng", "kg", "vital-signs", 1),
    "bmi": ("39156-5", "Body mass index (BMI) [Ratio]", "Chỉ số khối cơ thể", "kg/m2",
            "vital-signs", 1),
    "heart_rate": ("8867-4", "Heart rate", "Mạch", "/min", "vital-signs", 0),
    "waist": ("8280-0", "Waist Circumference at umbilicus by Tape measure", "Vòng eo", "cm",
              "exam", 1),
    "glucose": ("14771-0", "Fasting glucose [Moles/volume] in Serum or Plasma",
                "Glucose máu lúc đói", "mmol/L", "laboratory", 1),
    "hba1c": ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "HbA1c", "%",
              "laboratory", 1),
    "cholesterol": ("14647-2", "Cholesterol [Moles/volume] in Serum or Plasma",
                    "Cholesterol toàn phần", "mmol/L", "laboratory", 1),
    "activity": ("82290-8", "Frequency of moderate to vigorous aerobic physical activity",
                 "Thời gian hoạt động thể lực", "min/wk", "activity", 0),
}

BP_PANEL = ("85354-9", "Blood pressure panel with all children optional", "Huyết áp")
BP_SYSTOLIC = ("8480-6", "Systolic blood pressure")
BP_DIASTOLIC = ("8462-4", "Diastolic blood pressure")
MMHG = "mm[Hg]"

SMOKING = ("72166-2", "Tobacco smoking status", "Hút thuốc lá")
SMOKING_ANSWERS = {
    "current": ("449868002", "Smokes tobacco daily"),
    "former": ("8517006", "Ex-smoker"),
    "never": ("266919005", "Never smoked tobacco"),
}
ALCOHOL = ("11331-6", "History of Alcohol use", "Uống rượu bia")
ALCOHOL_ANSWERS = {
    True: ("219006", "Current drinker of alcohol"),
    False: ("105542008", "Non-drinker of alcohol"),
}

CHECKUP = (SNOMED, "185349003", "Encounter for check up", "Khám sức khỏe định kỳ")
FOLLOW_UP = (SNOMED, "390906007", "Follow-up encounter", "Khám theo dõi bệnh mạn tính")
CHECKUP_REASON = ("Z00.0", "General medical examination")

HYPERTENSION = ("I10", "Essential (primary) hypertension", "Tăng huyết áp vô căn")
DIABETES = ("E11", "Type 2 diabetes mellitus", "Đái tháo đường type 2")

# (ATC, display, Vietnamese label with strength, dosage text)
HTN_DRUGS = [
    ("C08CA01", "amlodipine", "Amlodipin 5 mg", "Uống 1 viên/ngày, buổi sáng"),
    ("C09CA01", "losartan", "Losartan 50 mg", "Uống 1 viên/ngày"),
    ("C09AA02", "enalapril", "Enalapril 5 mg", "Uống 1 viên/ngày"),
    ("C03AA03", "hydrochlorothiazide", "Hydroclorothiazid 25 mg", "Uống 1 viên/ngày, buổi sáng"),
]
DM_DRUGS = [
    ("A10BA02", "metformin", "Metformin 500 mg", "Uống 1 viên x 2 lần/ngày, sau ăn"),
    ("A10BB09", "gliclazide", "Gliclazid 30 mg", "Uống 1 viên/ngày, trước ăn sáng"),
]
