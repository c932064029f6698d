-- WHO HEARTS programme indicators and the treatment cascade for one care programme
-- ({{programme}}; prefix {{p}}), as the DHIS2 hypertension and diabetes package defines them
-- (simpledotorg/dhis2-hypertension-package, doc/design_guide.md, "Dashboards"; CLINICAL.md
-- "Standard programme indicators"), with the month arithmetic of Simple's reports
-- (docs.simple.org "What we report": registered by the end of the month before the 3-month
-- window; visits in the 3 — or 12 — calendar months ending with the period's last month).
--
-- A visit is a blood-pressure reading for hypertension, a fasting glucose or HbA1c result for
-- diabetes ("no visit (no BP measure recorded)"). Registered: enrolled in the programme (an
-- EpisodeOfCare, facts.sql) on or before the period's last day and not ended before it, 18 or
-- older then, not gone (gone.sql).
--
-- {{p}}_registrations  people first enrolled in the period ("Patient registrations").
-- {{p}}_registered     registered at the period's end ("cumulative registrations").
-- {{p}}_under_care     of the registered, those with a visit in the 12 months or enrolled
--                      within them ("registrations excluding 12 month lost to follow-up").
-- {{p}}_lost_to_follow_up  of the registered, enrolled before the 12 months and no visit in
--                      them ("no visit in the past 12 months").
-- {{p}}_controlled, {{p}}_uncontrolled, {{p}}_no_visit: of the registered who were enrolled
--                      before the 3-month window, those whose latest visit in it was controlled
--                      (BP < 140/90; fasting glucose < 7.0 mmol/L and HbA1c < 7 %), was not,
--                      or who had no visit in it.
-- {{p}}_cascade_*      treatment cascade: estimated adults with the condition → diagnosed
--                      (an active Condition) → treated (an active medicine) → registered →
--                      under care → controlled (latest visit in the 3-month window controlled,
--                      without the 3-month registration rule, as the package's cascade). The
--                      denominator of every step is the estimate: {{prevalence}} of the adults
--                      of the survey's age band ({{young}} to {{old}}); see indicators.py.
--
-- Each care patient is read once: their state in every period (nine flags as the bits of an
-- INT, 0 when not counted then), and one sum per measure and period, by unit; the sums are
-- then turned into one row per unit and period. Joining people to periods and counting them
-- by state cost 2–3 times as much (2 million people: 2.2 s CPU for both programmes).
WITH p AS ({{periods}}),
s AS (  -- the care patients, one row each
  SELECT commune, counted,
         {{p}}_enrolled AS enrolled, {{p}}_ended AS ended, {{p}}_diagnosed AS diagnosed,
         {{p}}_treated_from AS treated_from, {{p}}_treated_until AS treated_until,
         {{seen}} & {{period_months}} AS seen, {{high}} & {{period_months}} AS high
  FROM ind_facts
  WHERE counted <> 0
    AND ({{p}}_enrolled IS NOT NULL OR {{p}}_diagnosed IS NOT NULL OR {{p}}_treated_from IS NOT NULL)
), state AS (  -- per person, their state in each period (s0, s1, …)
  SELECT commune,
         {{each ,}}CASE WHEN (counted & {{p.bit}}) = 0 THEN 0 ELSE
           CASE WHEN enrolled <= {{p.period_end}} AND (ended IS NULL OR ended >= {{p.period_end}})
                THEN 1 ELSE 0 END
           + CASE WHEN enrolled > {{p.before_start}} AND enrolled <= {{p.period_end}} THEN 2 ELSE 0 END
           + CASE WHEN enrolled <= {{p.registered_by}} THEN 4 ELSE 0 END
           + CASE WHEN enrolled <= {{p.before_year}} THEN 8 ELSE 0 END
           + CASE WHEN (seen & {{p.year_bits}}) <> 0 THEN 16 ELSE 0 END
           + CASE WHEN (seen & {{p.window_bits}}) <> 0 THEN 32 ELSE 0 END
           + CASE WHEN (high & {{p.window_bits}}) > ((seen - high) & {{p.window_bits}})
                  THEN 64 ELSE 0 END
           + CASE WHEN diagnosed <= {{p.period_end}} THEN 128 ELSE 0 END
           + CASE WHEN treated_from <= {{p.period_end}}
                       AND (treated_until IS NULL OR treated_until >= {{p.period_end}})
                  THEN 256 ELSE 0 END END AS s{{#}}{{end}}
  FROM s
), counts AS (  -- flags: 1 registered, 2 enrolled in the period, 4 enrolled before the 3-month
  -- window, 8 before the 12 months, 16 a visit in the 12 months, 32 in the window, 64 the
  -- window's latest visit high, 128 diagnosed, 256 treated. Lost to follow-up is registered
  -- less under care, no visit the cohort less controlled and uncontrolled (disjoint parts).
  SELECT commune,
         {{each ,}}SUM(CASE WHEN (s{{#}} & 3) = 3 THEN 1 ELSE 0 END) AS registrations{{#}},
         SUM(CASE WHEN (s{{#}} & 1) = 1 THEN 1 ELSE 0 END) AS registered{{#}},
         SUM(CASE WHEN (s{{#}} & 25) IN (1, 17, 25) THEN 1 ELSE 0 END) AS under_care{{#}},
         SUM(CASE WHEN (s{{#}} & 5) = 5 THEN 1 ELSE 0 END) AS cohort{{#}},
         SUM(CASE WHEN (s{{#}} & 101) = 37 THEN 1 ELSE 0 END) AS controlled{{#}},
         SUM(CASE WHEN (s{{#}} & 101) = 101 THEN 1 ELSE 0 END) AS uncontrolled{{#}},
         SUM(CASE WHEN (s{{#}} & 128) <> 0 THEN 1 ELSE 0 END) AS diagnosed{{#}},
         SUM(CASE WHEN (s{{#}} & 256) <> 0 THEN 1 ELSE 0 END) AS treated{{#}},
         SUM(CASE WHEN (s{{#}} & 97) = 33 THEN 1 ELSE 0 END) AS controlled_now{{#}}{{end}}
  FROM state
  GROUP BY commune
), per_period AS (
  SELECT c.commune, p.grain, p.period_start,
         CASE p.k {{each}}WHEN {{p.k}} THEN registrations{{#}} {{end}}END AS registrations,
         CASE p.k {{each}}WHEN {{p.k}} THEN registered{{#}} {{end}}END AS registered,
         CASE p.k {{each}}WHEN {{p.k}} THEN under_care{{#}} {{end}}END AS under_care,
         CASE p.k {{each}}WHEN {{p.k}} THEN registered{{#}} - under_care{{#}} {{end}}END AS lost,
         CASE p.k {{each}}WHEN {{p.k}} THEN cohort{{#}} {{end}}END AS cohort,
         CASE p.k {{each}}WHEN {{p.k}} THEN controlled{{#}} {{end}}END AS controlled,
         CASE p.k {{each}}WHEN {{p.k}} THEN uncontrolled{{#}} {{end}}END AS uncontrolled,
         CASE p.k {{each}}WHEN {{p.k}} THEN cohort{{#}} - controlled{{#}} - uncontrolled{{#}} {{end}}END
           AS no_visit,
         CASE p.k {{each}}WHEN {{p.k}} THEN diagnosed{{#}} {{end}}END AS diagnosed,
         CASE p.k {{each}}WHEN {{p.k}} THEN treated{{#}} {{end}}END AS treated,
         CASE p.k {{each}}WHEN {{p.k}} THEN controlled_now{{#}} {{end}}END AS controlled_now
  FROM counts c CROSS JOIN p
), band AS (
  SELECT commune, {{clamp birth_date {{young}} {{old}}}} AS born, gone
  FROM ind_facts
), population AS (
  SELECT commune, born, gone, CAST(COUNT(*) AS INT) AS people
  FROM band
  GROUP BY commune, born, gone
), estimate AS (
  SELECT s.commune, p.grain, p.period_start, {{prevalence}} * SUM(s.people) AS estimated
  FROM population s JOIN p ON s.born <= p.{{young}} AND s.born > p.{{old}} AND (s.gone & p.bit) = 0
  GROUP BY s.commune, p.grain, p.period_start
), measures AS (  -- one row per commune and period: the counts, and the estimate
  SELECT COALESCE(c.commune, e.commune) AS commune, COALESCE(c.grain, e.grain) AS grain,
         COALESCE(c.period_start, e.period_start) AS period_start,
         COALESCE(e.estimated, 0) AS estimated,
         COALESCE(c.registrations, 0) AS registrations, COALESCE(c.registered, 0) AS registered,
         COALESCE(c.under_care, 0) AS under_care, COALESCE(c.lost, 0) AS lost,
         COALESCE(c.cohort, 0) AS cohort, COALESCE(c.controlled, 0) AS controlled,
         COALESCE(c.uncontrolled, 0) AS uncontrolled, COALESCE(c.no_visit, 0) AS no_visit,
         COALESCE(c.diagnosed, 0) AS diagnosed, COALESCE(c.treated, 0) AS treated,
         COALESCE(c.controlled_now, 0) AS controlled_now
  FROM per_period c
  FULL OUTER JOIN estimate e
    ON c.commune = e.commune AND c.grain = e.grain AND c.period_start = e.period_start
), names AS (
  SELECT * FROM (VALUES ('registrations'), ('registered'), ('under_care'), ('lost_to_follow_up'),
                        ('controlled'), ('uncontrolled'), ('no_visit'), ('cascade_diagnosed'),
                        ('cascade_treated'), ('cascade_registered'), ('cascade_under_care'),
                        ('cascade_controlled')) AS v(measure)
)
SELECT m.commune AS unit, m.grain, m.period_start, concat('{{p}}_', n.measure) AS indicator,
       CAST(CASE n.measure WHEN 'registrations' THEN m.registrations
                           WHEN 'registered' THEN m.registered
                           WHEN 'under_care' THEN m.under_care
                           WHEN 'lost_to_follow_up' THEN m.lost
                           WHEN 'controlled' THEN m.controlled
                           WHEN 'uncontrolled' THEN m.uncontrolled
                           WHEN 'no_visit' THEN m.no_visit
                           WHEN 'cascade_diagnosed' THEN m.diagnosed
                           WHEN 'cascade_treated' THEN m.treated
                           WHEN 'cascade_registered' THEN m.registered
                           WHEN 'cascade_under_care' THEN m.under_care
                           ELSE m.controlled_now END AS BIGINT) AS numerator,
       CAST(CASE WHEN n.measure IN ('registrations', 'registered') THEN NULL
                 WHEN n.measure IN ('under_care', 'lost_to_follow_up') THEN m.registered
                 WHEN n.measure IN ('controlled', 'uncontrolled', 'no_visit') THEN m.cohort
                 ELSE m.estimated END AS DOUBLE) AS denominator
FROM measures m CROSS JOIN names n
