-- ind_masks: per person, the months of the run (bits, see event.sql) with a check-up, and per
-- kind of result the months with one above its threshold ("high") and with one below it
-- ("low"). A month with results on both sides is settled by its latest result (facts.sql).
SELECT patient,
       bit_or(CASE WHEN kind = 'checkup' THEN bit ELSE 0 END) AS checkup,
       bit_or(CASE WHEN kind = 'bp' AND high THEN bit ELSE 0 END) AS bp_high,
       bit_or(CASE WHEN kind = 'bp' AND NOT high THEN bit ELSE 0 END) AS bp_low,
       bit_or(CASE WHEN kind = 'fpg' AND high THEN bit ELSE 0 END) AS fpg_high,
       bit_or(CASE WHEN kind = 'fpg' AND NOT high THEN bit ELSE 0 END) AS fpg_low,
       bit_or(CASE WHEN kind IN ('fpg', 'a1c') AND high THEN bit ELSE 0 END) AS sugar_high,
       bit_or(CASE WHEN kind IN ('fpg', 'a1c') AND NOT high THEN bit ELSE 0 END) AS sugar_low,
       bit_or(CASE WHEN kind = 'bmi' AND high THEN bit ELSE 0 END) AS bmi_high,
       bit_or(CASE WHEN kind = 'bmi' AND NOT high THEN bit ELSE 0 END) AS bmi_low
FROM ind_event
WHERE bit <> 0
GROUP BY patient
