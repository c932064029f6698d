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
-- Care patients' visit months differ from person to person, so they are not grouped first:
-- each is joined to the periods and reduced to their state there (nine flags as the bits of an
-- INT), and only then counted, by unit, period (p.k) and state — a single COUNT over the
-- person × period rows instead of eleven sums (2 million people: 1.8 → 1.6 s CPU).
WITH p AS ({{periods}}),
s AS (  -- the care patients, one row each
  SELECT commune, birth_date AS born, CASE WHEN special THEN patient END AS special,
         {{p}}_enrolled AS enrolled, {{p}}_ended AS ended, {{p}}_diagnosed AS diagnosed,
         {{p}}_treated_from AS treated_from, {{p}}_treated_until AS treated_until,
         {{seen}} & {{period_months}} AS seen, {{high}} & {{period_months}} AS high
  FROM ind_facts
  WHERE {{p}}_enrolled IS NOT NULL OR {{p}}_diagnosed IS NOT NULL OR {{p}}_treated_from IS NOT NULL
), state AS (  -- per person and period (p.k), what they are then, as bits
  SELECT s.commune, p.k,
         CASE WHEN s.enrolled <= p.period_end AND (s.ended IS NULL OR s.ended >= p.period_end)
              THEN 1 ELSE 0 END
         + CASE WHEN s.enrolled > p.before_start AND s.enrolled <= p.period_end THEN 2 ELSE 0 END
         + CASE WHEN s.enrolled <= p.registered_by THEN 4 ELSE 0 END
         + CASE WHEN s.enrolled <= p.before_year THEN 8 ELSE 0 END
         + CASE WHEN (s.seen & p.year_bits) <> 0 THEN 16 ELSE 0 END
         + CASE WHEN (s.seen & p.window_bits) <> 0 THEN 32 ELSE 0 END
         + CASE WHEN (s.high & p.window_bits) > ((s.seen - s.high) & p.window_bits)
                THEN 64 ELSE 0 END
         + CASE WHEN s.diagnosed <= p.period_end THEN 128 ELSE 0 END
         + CASE WHEN s.treated_from <= p.period_end
                     AND (s.treated_until IS NULL OR s.treated_until >= p.period_end)
                THEN 256 ELSE 0 END AS state
  FROM s JOIN p ON s.born <= p.born_18
  WHERE NOT EXISTS (SELECT 1 FROM ind_gone g WHERE g.patient = s.special AND g.period_end = p.period_end)
), tally AS (  -- the people alike counted together
  SELECT commune, k, state, CAST(COUNT(*) AS BIGINT) AS people
  FROM state
  GROUP BY commune, k, state
), flags AS (
  SELECT t.commune, p.grain, p.period_start, t.people,
         (state & 1) <> 0 AS registered, (state & 2) <> 0 AS enrolled_in_period,
         (state & 4) <> 0 AS enrolled_before_window, (state & 8) <> 0 AS enrolled_before_year,
         (state & 16) <> 0 AS year_visit, (state & 32) <> 0 AS window_visit,
         (state & 64) <> 0 AS window_high, (state & 128) <> 0 AS diagnosed,
         (state & 256) <> 0 AS treated
  FROM tally t JOIN p ON p.k = t.k
), counts AS (
  SELECT commune, grain, period_start,
         SUM(CASE WHEN registered AND enrolled_in_period THEN people ELSE 0 END) AS registrations,
         SUM(CASE WHEN registered THEN people ELSE 0 END) AS registered,
         SUM(CASE WHEN registered AND (year_visit OR NOT enrolled_before_year) THEN people ELSE 0 END) AS under_care,
         SUM(CASE WHEN registered AND enrolled_before_year AND NOT year_visit THEN people ELSE 0 END) AS lost,
         SUM(CASE WHEN registered AND enrolled_before_window THEN people ELSE 0 END) AS cohort,
         SUM(CASE WHEN registered AND enrolled_before_window AND window_visit AND NOT window_high
                  THEN people ELSE 0 END) AS controlled,
         SUM(CASE WHEN registered AND enrolled_before_window AND window_visit AND window_high
                  THEN people ELSE 0 END) AS uncontrolled,
         SUM(CASE WHEN registered AND enrolled_before_window AND NOT window_visit THEN people ELSE 0 END) AS no_visit,
         SUM(CASE WHEN diagnosed THEN people ELSE 0 END) AS diagnosed,
         SUM(CASE WHEN treated THEN people ELSE 0 END) AS treated,
         SUM(CASE WHEN registered AND window_visit AND NOT window_high THEN people ELSE 0 END) AS controlled_now
  FROM flags
  GROUP BY commune, grain, period_start
), band AS (
  SELECT commune, {{clamp birth_date {{young}} {{old}}}} AS born,
         CASE WHEN special THEN patient END AS special
  FROM ind_facts
), population AS (
  SELECT commune, born, special, CAST(COUNT(*) AS INT) AS people
  FROM band
  GROUP BY commune, born, special
), estimate AS (
  SELECT s.commune, p.grain, p.period_start, {{prevalence}} * SUM(s.people) AS estimated
  FROM population s JOIN p ON s.born <= p.{{young}} AND s.born > p.{{old}}
  WHERE NOT EXISTS (SELECT 1 FROM ind_gone g WHERE g.patient = s.special AND g.period_end = p.period_end)
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
  FROM counts c
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
