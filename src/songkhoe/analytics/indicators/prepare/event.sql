-- ind_event (a view, not stored): every dated fact an indicator reads, one row each, with
-- the day it was recorded for (the first ten characters of the FHIR date/dateTime: the local
-- date it was written with), the text and the resource id that order "latest wins" (the
-- text, then the id), and whether it is above its threshold. Only complete dates (YYYY-MM-DD…) count, and only
-- values in the programmes' units and plausible ranges (src/songkhoe/programs/data/*.toml);
-- a result's day is effectiveDateTime, else effectiveInstant, effectivePeriod.start, issued —
-- as the programmes engine reads it (engine.observation_day).
--
-- checkup: a yearly check-up, an Encounter typed or reasoned ICD-10 Z00.0 (general adult
--   medical examination) or SNOMED CT 185349003 (check-up), unless cancelled or entered in
--   error (Resolution 72-NQ/TW: a periodic check-up at least once a year).
-- bp: a blood-pressure panel (LOINC 85354-9, components 8480-6 / 8462-4 in mm[Hg], plausible
--   50–300 / 20–200), high when ≥ 140/90 mmHg: the office threshold of hypertension (VNHA/VSH
--   2022, CLINICAL.md "Screening and diagnosis thresholds") and of uncontrolled blood pressure
--   in WHO HEARTS (CLINICAL.md "Standard programme indicators").
-- fpg: fasting plasma glucose (LOINC 14771-0 in mmol/L or mg/dL, 1558-6 in mg/dL; plausible
--   1–50 mmol/L), high when ≥ 7.0 mmol/L = 126 mg/dL: diabetes range (Decision 5481/QĐ-BYT)
--   and uncontrolled blood sugar (HEARTS). mg/dL is converted with 0.05550745 and rounded to
--   0.1 mmol/L as the programmes do (diabetes-screening.toml, glucose_mw), so ≥ 6.95 before
--   rounding is 7.0.
-- a1c: HbA1c (LOINC 4548-4, %, plausible 3–20), high when ≥ 7 %: uncontrolled blood sugar
--   (HEARTS; diabetes-care.toml).
-- bmi: body mass index (LOINC 39156-5, kg/m2, plausible 8–80) as recorded, high when ≥ 25:
--   obesity by the Asian cut-off (WHO WPRO 2000; adult-checkup.toml flag_obese).
SELECT patient, kind, day, t, id, high
FROM (
SELECT patient, 'checkup' AS kind, substring(period_start, 1, 10) AS day, period_start AS t,
       id, FALSE AS high
FROM checkup_encounter
WHERE length(period_start) >= 10 AND COALESCE(status, '') NOT IN ('cancelled', 'entered-in-error')
UNION ALL
SELECT patient, 'bp' AS kind, substring(t, 1, 10) AS day, t, id,
       (systolic >= 140 OR diastolic >= 90) AS high
FROM (SELECT id, patient, COALESCE(effective, effective_instant, effective_start, issued) AS t,
             systolic, diastolic, systolic_unit, diastolic_unit
      FROM blood_pressure) b
WHERE length(t) >= 10 AND systolic_unit = 'mm[Hg]' AND diastolic_unit = 'mm[Hg]'
  AND systolic >= 50 AND systolic <= 300 AND diastolic >= 20 AND diastolic <= 200
UNION ALL
SELECT patient, CASE WHEN code = '4548-4' THEN 'a1c' ELSE 'fpg' END AS kind,
       substring(t, 1, 10) AS day, t, id,
       CASE WHEN quantity_unit = 'mg/dL' THEN quantity_value * 0.05550745 >= 6.95
            ELSE quantity_value >= 7 END AS high
FROM (SELECT id, patient, code, COALESCE(effective, effective_instant, effective_start, issued) AS t,
             quantity_value, quantity_unit
      FROM blood_sugar) s
WHERE length(t) >= 10
  AND ((code = '14771-0' AND quantity_unit = 'mmol/L' AND quantity_value >= 1 AND quantity_value <= 50)
       OR (code IN ('14771-0', '1558-6') AND quantity_unit = 'mg/dL'
           AND quantity_value * 0.05550745 >= 0.95 AND quantity_value * 0.05550745 < 50.05)
       OR (code = '4548-4' AND quantity_unit = '%' AND quantity_value >= 3 AND quantity_value <= 20))
UNION ALL
SELECT patient, 'bmi' AS kind, substring(t, 1, 10) AS day, t, id,
       quantity_value >= 25 AS high
FROM (SELECT id, patient, code, COALESCE(effective, effective_instant, effective_start, issued) AS t,
             quantity_value, quantity_unit
      FROM body_measure) m
WHERE length(t) >= 10 AND code = '39156-5' AND quantity_unit = 'kg/m2'
  AND quantity_value >= 8 AND quantity_value <= 80
) e
