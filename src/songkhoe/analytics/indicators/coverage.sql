-- checkup_coverage: people with at least one yearly check-up in the period / registered adults.
--
-- Resolution 72-NQ/TW (9 Sep 2025): from 2026 everyone gets a free periodic check-up or
-- screening at least once a year (CLINICAL.md "Policy context"); the check-up record is the
-- personal health record form of Decision 831/QĐ-BYT.
-- Registered adults: the people managed by the unit's stations (person.sql) who are 18 or
-- older on the period's last day (the adult-checkup programme's population, min_age = 18)
-- and have not left the population by then (gone.sql). A check-up: see event.sql.
-- People are counted in groups with the same unit and birth date (to the precision the
-- periods' cut-offs need: see indicators.py, clamp) — and, for the numerator, the same
-- check-up months, joined only to the periods holding one of them; only the special ones
-- (person.sql) one by one.
WITH p AS ({{periods}}),
f AS (
  SELECT commune, {{clamp birth_date born_18}} AS born,
         CASE WHEN special THEN patient END AS special, checkup & {{period_months}} AS checkup
  FROM ind_facts
), adults AS (
  SELECT commune, born, special, CAST(COUNT(*) AS INT) AS people
  FROM f
  GROUP BY commune, born, special
), checked AS (
  SELECT commune, born, special, checkup, CAST(COUNT(*) AS INT) AS people
  FROM f
  WHERE checkup <> 0
  GROUP BY commune, born, special, checkup
), counts AS (
  SELECT s.commune, p.grain, p.period_start, p.period_end, s.special, 0 AS numerator,
         s.people AS denominator
  FROM adults s JOIN p ON s.born <= p.born_18
  UNION ALL
  SELECT s.commune, p.grain, p.period_start, p.period_end, s.special, s.people AS numerator,
         0 AS denominator
  FROM checked s JOIN p ON s.born <= p.born_18 AND (s.checkup & p.period_bits) <> 0
)
SELECT c.commune AS unit, c.grain, c.period_start, 'checkup_coverage' AS indicator,
       CAST(SUM(c.numerator) AS BIGINT) AS numerator, CAST(SUM(c.denominator) AS DOUBLE) AS denominator
FROM counts c
WHERE NOT EXISTS (SELECT 1 FROM ind_gone g WHERE g.patient = c.special AND g.period_end = c.period_end)
GROUP BY c.commune, c.grain, c.period_start
