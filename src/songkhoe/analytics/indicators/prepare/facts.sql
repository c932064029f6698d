-- ind_facts: the people of ind_base who are adults at the end of some
-- period of the run, with what depends on the periods (bits: bit k is the run's period k):
--
-- gone: the periods at whose end they have left the population (gone.sql);
-- counted: the periods at whose end they are 18 or older (the adult-checkup programme's
--   population, min_age = 18) and have not left the population. {{adult}} gives the
--   periods at whose end a birth date is 18 or older: a CASE over the periods' distinct
--   cut-offs, oldest first, so most people take its first branch (indicators.py, _adult).
--
-- Written once (a copy of the base with two more columns): as a view, each indicator paid
-- for the cut-offs and the join again, 1.5 times what writing it costs.
SELECT b.*, COALESCE(g.gone, 0) AS gone,
       {{adult}} - ({{adult}} & COALESCE(g.gone, 0)) AS counted
FROM ind_base b
LEFT JOIN ind_gone g ON g.patient = b.patient
WHERE b.birth_date <= {{latest_adult_birth}}
