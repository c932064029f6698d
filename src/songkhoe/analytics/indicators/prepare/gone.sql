-- ind_gone: the people who have left the registered population by the end of a period
-- (one row per person and period end), of the few marked special in ind_person:
--
-- * a record not in use (Patient.active false) or a death recorded without a date
--   (deceasedBoolean true): every period;
-- * a death dated on or before the period's end (deceasedDateTime);
-- * the latest worklist call on or before the period's end found them moved away or dead
--   ("Closing the record" in the DHIS2 hypertension package design guide, CLINICAL.md
--   "Standard programme indicators"), and they have had no check-up or blood pressure
--   taken since that day — a visit after the call brings them back, as the programmes
--   engine ignores calls before a person's last visit (engine._latest_call).
WITH ends AS ({{period_ends}}),
special AS (SELECT patient FROM ind_person WHERE special),
call AS (
  SELECT patient, substring(t, 1, 10) AS day, concat(substring(t, 1, 10), ' ', id) AS sort_key,
         outcome
  FROM (SELECT id, patient, outcome, COALESCE(execution_start, authored_on) AS t
        FROM worklist_call) c
  WHERE length(t) >= 10 AND outcome IS NOT NULL AND patient IN (SELECT patient FROM special)
), latest AS (
  SELECT c.patient, e.period_end, MAX(c.day) AS day, max_by(c.outcome, c.sort_key) AS outcome
  FROM call c JOIN ends e ON c.day <= e.period_end
  GROUP BY c.patient, e.period_end
), seen AS (
  SELECT patient, day FROM ind_touched
  WHERE kind IN ('checkup', 'bp')
    AND patient IN (SELECT patient FROM call WHERE outcome IN ('moved-away', 'died'))
)
SELECT l.patient, l.period_end
FROM latest l
WHERE l.outcome IN ('moved-away', 'died')
  AND NOT EXISTS (SELECT 1 FROM seen s
                  WHERE s.patient = l.patient AND s.day >= l.day AND s.day <= l.period_end)
UNION
SELECT p.id AS patient, e.period_end
FROM patient p CROSS JOIN ends e
WHERE p.id IN (SELECT patient FROM special)
  AND (COALESCE(p.active, TRUE) = FALSE OR COALESCE(p.deceased, FALSE) = TRUE
       OR substring(p.deceased_date, 1, 10) <= e.period_end)
