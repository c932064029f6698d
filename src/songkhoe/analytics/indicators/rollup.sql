-- The indicators of the units of the levels asked for: the commune-level counts (ind_rows,
-- one row per unit, period and indicator) as they are, and summed over the communes of each
-- province and of the nation (ind_unit). Counts are of people and every person has one unit
-- per level, so a unit's numerator and denominator are the sums of its communes'. value is
-- numerator / denominator (the numerator, a count, when there is no denominator); a unit and
-- period whose numerator and denominator are both empty or zero have no row.
SELECT r.unit AS org, 'commune' AS org_level, r.grain AS period_grain,
       CAST(r.period_start AS DATE) AS period_start, r.indicator, r.numerator, r.denominator,
       CASE WHEN r.denominator IS NULL THEN CAST(r.numerator AS DOUBLE)
            WHEN r.denominator > 0 THEN r.numerator / r.denominator END AS value
FROM ind_rows r
WHERE {{communes}}
UNION ALL
SELECT u.province AS org, 'province' AS org_level, r.grain AS period_grain,
       CAST(r.period_start AS DATE) AS period_start, r.indicator,
       CAST(SUM(r.numerator) AS BIGINT) AS numerator, SUM(r.denominator) AS denominator,
       CASE WHEN SUM(r.denominator) IS NULL THEN CAST(SUM(r.numerator) AS DOUBLE)
            WHEN SUM(r.denominator) > 0 THEN SUM(r.numerator) / SUM(r.denominator) END AS value
FROM ind_rows r
JOIN ind_unit u ON u.org = r.unit
WHERE {{provinces}}
GROUP BY u.province, r.grain, r.period_start, r.indicator
UNION ALL
SELECT u.nation AS org, 'nation' AS org_level, r.grain AS period_grain,
       CAST(r.period_start AS DATE) AS period_start, r.indicator,
       CAST(SUM(r.numerator) AS BIGINT) AS numerator, SUM(r.denominator) AS denominator,
       CASE WHEN SUM(r.denominator) IS NULL THEN CAST(SUM(r.numerator) AS DOUBLE)
            WHEN SUM(r.denominator) > 0 THEN SUM(r.numerator) / SUM(r.denominator) END AS value
FROM ind_rows r
JOIN ind_unit u ON u.org = r.unit
WHERE {{nations}}
GROUP BY u.nation, r.grain, r.period_start, r.indicator
