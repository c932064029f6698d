-- ind_masks: per person, the calendar months from {{first_day}} to {{as_of}} as the
-- bits of a BIGINT (ind_month: bit 0 is the first month) with a check-up, and per kind of
-- result the months with one above its threshold ("high") and with one below it ("low").
-- Periods (month, quarter, year) and the HEARTS windows (the last 3 and 12 months) are sets of
-- calendar months, so every period's indicators can be read from a person's bits. A month
-- with results on both sides of a threshold is settled by its latest result (base.sql).
WITH months AS ({{months}})
SELECT e.patient,
       bit_or(CASE WHEN e.kind = 'checkup' THEN m.bit ELSE 0 END) AS checkup,
       bit_or(CASE WHEN e.kind = 'bp' AND e.high THEN m.bit ELSE 0 END) AS bp_high,
       bit_or(CASE WHEN e.kind = 'bp' AND NOT e.high THEN m.bit ELSE 0 END) AS bp_low,
       bit_or(CASE WHEN e.kind = 'fpg' AND e.high THEN m.bit ELSE 0 END) AS fpg_high,
       bit_or(CASE WHEN e.kind = 'fpg' AND NOT e.high THEN m.bit ELSE 0 END) AS fpg_low,
       bit_or(CASE WHEN e.kind IN ('fpg', 'a1c') AND e.high THEN m.bit ELSE 0 END) AS sugar_high,
       bit_or(CASE WHEN e.kind IN ('fpg', 'a1c') AND NOT e.high THEN m.bit ELSE 0 END) AS sugar_low,
       bit_or(CASE WHEN e.kind = 'bmi' AND e.high THEN m.bit ELSE 0 END) AS bmi_high,
       bit_or(CASE WHEN e.kind = 'bmi' AND NOT e.high THEN m.bit ELSE 0 END) AS bmi_low
FROM ind_event e
JOIN months m ON m.month_key = substring(e.day, 1, 7)
WHERE e.day <= {{as_of}}
GROUP BY e.patient
