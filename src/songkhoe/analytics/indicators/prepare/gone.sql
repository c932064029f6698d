-- ind_gone: the people who have left the registered population by the end of a period of the
-- run, with those periods as bits (bit k: period k), of the few marked special in the base
-- ({{base}}, {{visits}}: ind_base, ind_visits or some of their rows):
--
-- * a record not in use (Patient.active false) or a death recorded without a date
--   (deceasedBoolean true): every period;
-- * a death dated on or before the period's end (deceasedDateTime);
-- * the latest worklist call on or before the period's end found them moved away or dead
--   ("Closing the record" in the DHIS2 hypertension package design guide, CLINICAL.md
--   "Standard programme indicators"), and they have had no check-up or blood pressure
--   taken since that day (visits.sql) — a visit after the call brings them back, as the
--   programmes engine ignores calls before a person's last visit (engine._latest_call).
WITH p AS ({{periods}}),
special AS (SELECT patient, retired, died FROM {{base}} WHERE special),
call AS (
  SELECT patient, substring(t, 1, 10) AS day, concat(substring(t, 1, 10), ' ', id) AS sort_key,
         outcome
  FROM (SELECT id, patient, outcome, COALESCE(execution_start, authored_on) AS t
        FROM worklist_call) c
  WHERE length(t) >= 10 AND outcome IS NOT NULL AND patient IN (SELECT patient FROM special)
), latest AS (
  SELECT c.patient, e.period_end, MAX(c.day) AS day, max_by(c.outcome, c.sort_key) AS outcome
  FROM call c JOIN (SELECT DISTINCT period_end FROM p) e ON c.day <= e.period_end
  GROUP BY c.patient, e.period_end
), gone AS (
  SELECT l.patient, l.period_end
  FROM latest l
  WHERE l.outcome IN ('moved-away', 'died')
    AND NOT EXISTS (SELECT 1 FROM {{visits}} s
                    WHERE s.patient = l.patient AND s.day >= l.day AND s.day <= l.period_end)
  UNION
  SELECT s.patient, e.period_end
  FROM special s CROSS JOIN (SELECT DISTINCT period_end FROM p) e
  WHERE s.retired OR s.died <= e.period_end
)
SELECT g.patient, bit_or(p.bit) AS gone
FROM gone g JOIN p ON p.period_end = g.period_end
GROUP BY g.patient
