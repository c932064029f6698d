-- ind_person: the people indicators count, each placed in the commune-level unit of the
-- Organization managing them now (Patient.managingOrganization, the commune health station).
-- A person moved to another station counts there for every period, past ones included, so a
-- person is never counted in two units. People without a full birth date (an age cannot be
-- known) or without a known managing Organization are not counted.
--
-- special: people who may leave the registered population (see gone.sql): a record not in use
-- (Patient.active false), a death recorded (Patient.deceased[x]), or a worklist call that found
-- them moved away or dead (gone.sql decides, per period, from the calls and from retired: the
-- record is not in use or the death has no date, and died: the day of a dated death).
SELECT p.id AS patient, u.commune AS commune, substring(p.birth_date, 1, 10) AS birth_date,
       (COALESCE(p.active, TRUE) = FALSE OR COALESCE(p.deceased, FALSE) = TRUE
        OR p.deceased_date IS NOT NULL
        OR p.id IN (SELECT c.patient FROM worklist_call c
                    WHERE c.outcome IN ('moved-away', 'died'))) AS special,
       (COALESCE(p.active, TRUE) = FALSE OR COALESCE(p.deceased, FALSE) = TRUE) AS retired,
       substring(p.deceased_date, 1, 10) AS died
FROM patient p
JOIN ind_unit u ON u.org = p.organization
WHERE length(p.birth_date) >= 10
