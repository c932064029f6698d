-- ind_base: one row per person (person.sql) with everything the indicators read about them
-- that does not depend on the periods asked for — so it can be built once and kept
-- (indicators.Base) while the periods change (facts.sql adds what does).
--
-- Months (bits, see masks.sql): checkup; per kind, *_seen (a result that month) and *_high
-- (that month's latest result is above its threshold). bp: blood pressure; fpg: fasting
-- glucose; sugar: blood-sugar visits for diabetes care, where the latest day with a fasting
-- glucose or HbA1c decides and is high when any of its results is (diabetes-care.toml: when
-- both were measured both must be below threshold); bmi: body mass index. "Latest" is by the
-- date/dateTime as written, then the resource id.
--
-- Care programmes (the EpisodeOfCare the programmes engine writes on enrolment,
-- docs/programmes.md; status entered-in-error or cancelled ignored): *_enrolled, the first
-- day of the first episode; *_ended, the last day of the last one when every episode has
-- ended (a person enrolled again is counted from the first enrolment).
-- Diagnosis: *_diagnosed, the first day of an active ICD-10 Condition (hypertension I10–I15,
-- diabetes E10–E14; onset, else recordedDate; undated counts from always), as the programmes
-- engine reads Conditions (clinical status active/recurrence/relapse or none, not refuted or
-- entered in error).
-- Treatment: *_treated_from/_until, the first and last day of MedicationStatements (active,
-- completed or intended) of WHO ATC antihypertensives (C02 antihypertensives, C03 diuretics,
-- C07 beta blockers, C08 calcium channel blockers, C09 renin–angiotensin agents) or
-- antidiabetics (A10) — until NULL while one has no end.
WITH months AS ({{months}}),
mixed AS (
  SELECT patient, bp_high, bp_low, fpg_high, fpg_low, sugar_high, sugar_low, bmi_high, bmi_low
  FROM ind_masks
  WHERE (bp_high & bp_low) <> 0 OR (fpg_high & fpg_low) <> 0 OR (sugar_high & sugar_low) <> 0
     OR (bmi_high & bmi_low) <> 0
), contested AS (
  SELECT e.patient, e.kind, e.day, concat(e.t, ' ', e.id) AS sort_key, e.high, b.bit,
         m.bp_high & m.bp_low AS bp, m.fpg_high & m.fpg_low AS fpg,
         m.sugar_high & m.sugar_low AS sugar, m.bmi_high & m.bmi_low AS bmi
  FROM ind_touched e
  JOIN months b ON b.month_key = substring(e.day, 1, 7)
  JOIN mixed m ON m.patient = e.patient
  WHERE e.kind <> 'checkup'
), sugar_days AS (
  SELECT patient, bit, day, MAX(CASE WHEN high THEN 1 ELSE 0 END) AS high
  FROM contested
  WHERE kind IN ('fpg', 'a1c') AND (sugar & bit) <> 0
  GROUP BY patient, bit, day
), latest AS (
  SELECT patient, family, bit, max_by(high, rank) AS high
  FROM (SELECT patient, kind AS family, bit, sort_key AS rank, CASE WHEN high THEN 1 ELSE 0 END AS high
        FROM contested
        WHERE (kind = 'bp' AND (bp & bit) <> 0) OR (kind = 'fpg' AND (fpg & bit) <> 0)
           OR (kind = 'bmi' AND (bmi & bit) <> 0)
        UNION ALL
        SELECT patient, 'sugar' AS family, bit, day AS rank, high FROM sugar_days) r
  GROUP BY patient, family, bit
), settled AS (
  SELECT patient,
         bit_or(CASE WHEN family = 'bp' AND high = 1 THEN bit ELSE 0 END) AS bp,
         bit_or(CASE WHEN family = 'fpg' AND high = 1 THEN bit ELSE 0 END) AS fpg,
         bit_or(CASE WHEN family = 'sugar' AND high = 1 THEN bit ELSE 0 END) AS sugar,
         bit_or(CASE WHEN family = 'bmi' AND high = 1 THEN bit ELSE 0 END) AS bmi
  FROM latest
  GROUP BY patient
), care AS (
  SELECT patient,
         MIN(CASE WHEN programme = 'hypertension-care' THEN since END) AS htn_enrolled,
         CASE WHEN COUNT(CASE WHEN programme = 'hypertension-care' AND until IS NULL THEN 1 END) = 0
              THEN MAX(CASE WHEN programme = 'hypertension-care' THEN until END) END AS htn_ended,
         MIN(CASE WHEN programme = 'diabetes-care' THEN since END) AS dm_enrolled,
         CASE WHEN COUNT(CASE WHEN programme = 'diabetes-care' AND until IS NULL THEN 1 END) = 0
              THEN MAX(CASE WHEN programme = 'diabetes-care' THEN until END) END AS dm_ended
  FROM (SELECT patient, programme, substring(period_start, 1, 10) AS since,
               CASE WHEN length(period_end) >= 10 THEN substring(period_end, 1, 10) END AS until
        FROM episode_of_care
        WHERE programme IN ('hypertension-care', 'diabetes-care')
          AND programme_system = concat('urn:songkhoe:programme:', programme)
          AND COALESCE(status, '') NOT IN ('entered-in-error', 'cancelled')
          AND length(period_start) >= 10) e
  GROUP BY patient
), diagnosis AS (
  SELECT patient,
         MIN(CASE WHEN substring(icd10, 1, 3) >= 'I10' AND substring(icd10, 1, 3) <= 'I15'
                  THEN since END) AS htn_diagnosed,
         MIN(CASE WHEN substring(icd10, 1, 3) >= 'E10' AND substring(icd10, 1, 3) <= 'E14'
                  THEN since END) AS dm_diagnosed
  FROM (SELECT patient, icd10,
               CASE WHEN length(COALESCE(onset, onset_start, recorded_date)) >= 10
                    THEN substring(COALESCE(onset, onset_start, recorded_date), 1, 10)
                    ELSE '0000-01-01' END AS since
        FROM condition
        WHERE COALESCE(clinical_status, 'active') IN ('active', 'recurrence', 'relapse')
          AND COALESCE(verification_status, '') NOT IN ('refuted', 'entered-in-error')) c
  GROUP BY patient
), treatment AS (
  SELECT patient,
         MIN(CASE WHEN htn THEN since END) AS htn_treated_from,
         CASE WHEN COUNT(CASE WHEN htn AND until IS NULL THEN 1 END) = 0
              THEN MAX(CASE WHEN htn THEN until END) END AS htn_treated_until,
         MIN(CASE WHEN dm THEN since END) AS dm_treated_from,
         CASE WHEN COUNT(CASE WHEN dm AND until IS NULL THEN 1 END) = 0
              THEN MAX(CASE WHEN dm THEN until END) END AS dm_treated_until
  FROM (SELECT patient,
               substring(atc, 1, 3) IN ('C02', 'C03', 'C07', 'C08', 'C09') AS htn,
               substring(atc, 1, 3) = 'A10' AS dm,
               CASE WHEN length(COALESCE(effective, effective_start, date_asserted)) >= 10
                    THEN substring(COALESCE(effective, effective_start, date_asserted), 1, 10)
                    ELSE '0000-01-01' END AS since,
               CASE WHEN length(effective_end) >= 10 THEN substring(effective_end, 1, 10) END AS until
        FROM medication
        WHERE COALESCE(status, 'active') IN ('active', 'completed', 'intended')) m
  WHERE htn OR dm
  GROUP BY patient
)
SELECT x.patient, x.commune, x.birth_date, x.special, x.retired, x.died,
       COALESCE(k.checkup, 0) AS checkup,
       COALESCE(k.bp_high + k.bp_low - (k.bp_high & k.bp_low), 0) AS bp_seen,
       COALESCE(k.bp_high - (k.bp_high & k.bp_low) + COALESCE(s.bp, 0), 0) AS bp_high,
       COALESCE(k.fpg_high + k.fpg_low - (k.fpg_high & k.fpg_low), 0) AS fpg_seen,
       COALESCE(k.fpg_high - (k.fpg_high & k.fpg_low) + COALESCE(s.fpg, 0), 0) AS fpg_high,
       COALESCE(k.sugar_high + k.sugar_low - (k.sugar_high & k.sugar_low), 0) AS sugar_seen,
       COALESCE(k.sugar_high - (k.sugar_high & k.sugar_low) + COALESCE(s.sugar, 0), 0) AS sugar_high,
       COALESCE(k.bmi_high + k.bmi_low - (k.bmi_high & k.bmi_low), 0) AS bmi_seen,
       COALESCE(k.bmi_high - (k.bmi_high & k.bmi_low) + COALESCE(s.bmi, 0), 0) AS bmi_high,
       c.htn_enrolled, c.htn_ended, c.dm_enrolled, c.dm_ended,
       d.htn_diagnosed, d.dm_diagnosed,
       t.htn_treated_from, t.htn_treated_until, t.dm_treated_from, t.dm_treated_until
FROM ind_person x
LEFT JOIN ind_masks k ON k.patient = x.patient
LEFT JOIN settled s ON s.patient = x.patient
LEFT JOIN care c ON c.patient = x.patient
LEFT JOIN diagnosis d ON d.patient = x.patient
LEFT JOIN treatment t ON t.patient = x.patient
