-- ind_visits: the check-ups and blood pressures (event.sql, from ind_touched) of the people a
-- worklist call found moved away or dead, by day: a visit after the call brings them back
-- (gone.sql). Kept with ind_base.
SELECT patient, day
FROM ind_touched
WHERE kind IN ('checkup', 'bp')
  AND patient IN (SELECT patient FROM worklist_call WHERE outcome IN ('moved-away', 'died'))
