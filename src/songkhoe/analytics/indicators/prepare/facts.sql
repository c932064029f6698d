-- ind_facts: the people of the base ({{base}}: ind_base or some of its rows) who are adults at the end of some period of the run, with
-- the base's columns the indicators read and what depends on the periods (bits: bit k is the
-- run's period k):
--
-- gone: the periods at whose end they have left the population (gone.sql);
-- counted: the periods at whose end they are 18 or older (the adult-checkup programme's
--   population, min_age = 18) and have not left the population. {{adult}} gives the
--   periods at whose end a birth date is 18 or older: a CASE over the periods' distinct
--   cut-offs, oldest first, so most people take its first branch (indicators.py, _adult).
--
-- Written once: as a view, each indicator paid for the cut-offs and the join again, 1.5 times
-- what writing it costs.
SELECT commune, birth_date, gone, adult - (adult & gone) AS counted, checkup,
       bp_seen, bp_high, fpg_seen, fpg_high, sugar_seen, sugar_high, bmi_seen, bmi_high,
       htn_enrolled, htn_ended, dm_enrolled, dm_ended, htn_diagnosed, dm_diagnosed,
       htn_treated_from, htn_treated_until, dm_treated_from, dm_treated_until
FROM (
SELECT b.*, COALESCE(g.gone, 0) AS gone, {{adult}} AS adult
FROM {{base}} b
LEFT JOIN ind_gone g ON g.patient = b.patient
WHERE b.birth_date <= {{latest_adult_birth}}
) f
