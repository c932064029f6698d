-- Prevalence among the adults screened in the period: of the registered adults (coverage.sql)
-- with a result of the kind in the period, those whose latest result in the period is above
-- its threshold (event.sql gives the codes, units and thresholds):
--
-- raised_blood_pressure: latest blood pressure ≥ 140/90 mmHg — the office threshold of
--   hypertension (Vietnam National Heart Association / Vietnamese Society of Hypertension
--   2022; CLINICAL.md "Screening and diagnosis thresholds"), as the hypertension-screening
--   programme classifies it.
-- raised_glucose: latest fasting plasma glucose ≥ 7.0 mmol/L (126 mg/dL) — the diabetes range
--   of Decision 5481/QĐ-BYT (30 Dec 2020) and WHO PEN Protocol 1; one raised result is a
--   positive screen, not a diagnosis (5481 needs two).
-- obesity: latest BMI ≥ 25 kg/m2 — obesity by the WHO Western Pacific Region cut-offs for
--   Asian adults (WPRO/IASO/IOTF 2000), as adult-checkup.toml flags it.
--
-- "Latest" is settled month by month (facts.sql): the period's last month with a result
-- decides, by that month's latest result. With high and low the months whose latest result
-- is above and below the threshold (disjoint bit sets), the latest month is high exactly when
-- high > low once both are limited to the period's months: the larger of two disjoint bit
-- sets holds the highest bit.
WITH p AS ({{periods}}),
f AS (
  SELECT commune, {{clamp birth_date born_18}} AS born,
         CASE WHEN special THEN patient END AS special,
         {{seen}} & {{period_months}} AS seen, {{high}} & {{period_months}} AS high
  FROM ind_facts
  WHERE ({{seen}} & {{period_months}}) <> 0
), s AS (
  SELECT commune, born, special, seen, high, CAST(COUNT(*) AS INT) AS people
  FROM f
  GROUP BY commune, born, special, seen, high
)
SELECT s.commune AS unit, p.grain, p.period_start, '{{indicator}}' AS indicator,
       CAST(SUM(CASE WHEN (s.high & p.period_bits) > ((s.seen - s.high) & p.period_bits)
                     THEN s.people ELSE 0 END) AS BIGINT) AS numerator,
       CAST(SUM(s.people) AS DOUBLE) AS denominator
FROM s JOIN p ON s.born <= p.born_18 AND (s.seen & p.period_bits) <> 0
WHERE NOT EXISTS (SELECT 1 FROM ind_gone g WHERE g.patient = s.special AND g.period_end = p.period_end)
GROUP BY s.commune, p.grain, p.period_start
