-- ind_touched: the dated facts (event.sql) of the few people whose months need a closer look
-- than their bits give, read once for both: people with results on both sides of a threshold
-- in one month (masks.sql; base.sql settles the month by its latest result) and people a
-- worklist call found moved away or dead (visits.sql, gone.sql).
SELECT patient, kind, day, t, id, high
FROM ind_event
WHERE day <= {{as_of}}
  AND patient IN (SELECT patient FROM ind_masks
                  WHERE (bp_high & bp_low) <> 0 OR (fpg_high & fpg_low) <> 0
                     OR (sugar_high & sugar_low) <> 0 OR (bmi_high & bmi_low) <> 0
                  UNION
                  SELECT patient FROM worklist_call WHERE outcome IN ('moved-away', 'died'))
