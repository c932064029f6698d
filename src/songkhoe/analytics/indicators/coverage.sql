-- checkup_coverage: people with at least one yearly check-up in the period / registered adults.
--
-- Resolution 72-NQ/TW (9 Sep 2025): from 2026 everyone gets a free periodic check-up or
-- screening at least once a year (CLINICAL.md "Policy context"); the check-up record is the
-- personal health record form of Decision 831/QĐ-BYT.
-- Registered adults: the people managed by the unit's stations (person.sql) who are 18 or
-- older on the period's last day (the adult-checkup programme's population, min_age = 18)
-- and have not left the population by then (gone.sql). A check-up: see event.sql.
-- Numerators: each person with a check-up in the run is read once, one sum per period, by
-- unit. Denominators: adults are counted by unit and by the periods they count in (a few
-- patterns of bits), then per period. Both are then one row per unit and period.
WITH p AS ({{periods}}),
checked AS (
  SELECT commune,
         {{each ,}}SUM(CASE WHEN (counted & {{p.bit}}) <> 0 AND (checkup & {{p.period_bits}}) <> 0
                  THEN 1 ELSE 0 END) AS n{{#}}{{end}}
  FROM ind_facts
  WHERE counted <> 0 AND (checkup & {{period_months}}) <> 0
  GROUP BY commune
), adults AS (
  SELECT commune, counted, COUNT(*) AS people
  FROM ind_facts
  WHERE counted <> 0
  GROUP BY commune, counted
), registered AS (
  SELECT a.commune, p.k, SUM(CASE WHEN (a.counted & p.bit) <> 0 THEN a.people ELSE 0 END) AS people
  FROM adults a CROSS JOIN p
  GROUP BY a.commune, p.k
)
SELECT r.commune AS unit, p.grain, p.period_start, 'checkup_coverage' AS indicator,
       CAST(COALESCE(CASE p.k {{each}}WHEN {{p.k}} THEN c.n{{#}} {{end}}END, 0) AS BIGINT) AS numerator,
       CAST(r.people AS DOUBLE) AS denominator
FROM registered r
JOIN p ON p.k = r.k
LEFT JOIN checked c ON c.commune = r.commune
