-- The indicators of the units of each level asked for ({{levels}}): the commune-level counts
-- (ind_rows) summed over each unit's communes (ind_unit). Counts are of people and every
-- person has one unit per level, so a unit's numerator and denominator are the sums of its
-- communes'. value is numerator / denominator (the numerator, a count, when there is no
-- denominator); a unit and period whose numerator and denominator are both empty or zero
-- have no row.
WITH levels AS ({{levels}})
SELECT CASE l.org_level WHEN 'commune' THEN u.commune WHEN 'province' THEN u.province
                        ELSE u.nation END AS org,
       l.org_level, r.grain AS period_grain, CAST(r.period_start AS DATE) AS period_start,
       r.indicator, CAST(SUM(r.numerator) AS BIGINT) AS numerator,
       SUM(r.denominator) AS denominator,
       CASE WHEN SUM(r.denominator) IS NULL THEN CAST(SUM(r.numerator) AS DOUBLE)
            WHEN SUM(r.denominator) > 0 THEN SUM(r.numerator) / SUM(r.denominator) END AS value
FROM ind_rows r
JOIN ind_unit u ON u.org = r.unit
CROSS JOIN levels l
GROUP BY CASE l.org_level WHEN 'commune' THEN u.commune WHEN 'province' THEN u.province
                          ELSE u.nation END,
         l.org_level, r.grain, r.period_start, r.indicator
HAVING SUM(r.numerator) > 0 OR SUM(r.denominator) > 0
ORDER BY org_level, org, period_grain, period_start, indicator
