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
  SELECT commune, counted, {{seen}} & {{period_months}} AS seen, {{high}} & {{period_months}} AS high
  FROM ind_facts
  WHERE ({{seen}} & {{period_months}}) <> 0 AND counted <> 0
), w AS (
  SELECT commune,
         {{each ,}}SUM(CASE WHEN (counted & {{p.bit}}) <> 0 AND (seen & {{p.period_bits}}) <> 0
                  THEN 1 ELSE 0 END) AS d{{#}},
         SUM(CASE WHEN (counted & {{p.bit}}) <> 0
                       AND (high & {{p.period_bits}}) > ((seen - high) & {{p.period_bits}})
                  THEN 1 ELSE 0 END) AS n{{#}}{{end}}
  FROM f
  GROUP BY commune
)
SELECT w.commune AS unit, p.grain, p.period_start, '{{indicator}}' AS indicator,
       CAST(CASE p.k {{each}}WHEN {{p.k}} THEN n{{#}} {{end}}END AS BIGINT) AS numerator,
       CAST(CASE p.k {{each}}WHEN {{p.k}} THEN d{{#}} {{end}}END AS DOUBLE) AS denominator
FROM w CROSS JOIN p
