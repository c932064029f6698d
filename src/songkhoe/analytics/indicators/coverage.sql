-- checkup_coverage: people with at least one yearly check-up in the period / registered adults.
--
-- Resolution 72-NQ/TW (9 Sep 2025): from 2026 everyone gets a free periodic check-up or
-- screening at least once a year (CLINICAL.md "Policy context"); the check-up record is the
-- personal health record form of Decision 831/QĐ-BYT.
-- Registered adults: the people managed by the unit's stations (person.sql) who are 18 or
-- older on the period's last day (the adult-checkup programme's population, min_age = 18)
-- and have not left the population by then (gone.sql). A check-up: see event.sql.
-- People are counted in groups with the same unit, birth date (to the precision the periods'
-- cut-offs need: see indicators.py, clamp) and check-up months; only the special ones
-- (person.sql) one by one.
WITH p AS ({{periods}}),
f AS (
  SELECT commune, {{clamp birth_date born_18}} AS born,
         CASE WHEN special THEN patient END AS special, checkup & {{period_months}} AS checkup
  FROM ind_facts
), s AS (
  SELECT commune, born, special, checkup, COUNT(*) AS people
  FROM f
  GROUP BY commune, born, special, checkup
)
SELECT s.commune AS unit, p.grain, p.period_start, 'checkup_coverage' AS indicator,
       CAST(SUM(CASE WHEN (s.checkup & p.period_bits) <> 0 THEN s.people ELSE 0 END) AS BIGINT) AS numerator,
       CAST(SUM(s.people) AS DOUBLE) AS denominator
FROM s JOIN p ON s.born <= p.born_18
WHERE NOT EXISTS (SELECT 1 FROM ind_gone g WHERE g.patient = s.special AND g.period_end = p.period_end)
GROUP BY s.commune, p.grain, p.period_start
