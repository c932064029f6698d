-- ind_unit: each Organization's units at the three levels indicators are reported at.
--
-- Viet Nam has two levels of local government since 1 July 2025, province and commune
-- (Resolution 202/2025/QH15; CLINICAL.md "Administrative units"), and the health system's
-- Organizations follow them through Organization.partOf: the nation is the root (the Ministry
-- of Health), a province the Organization one level below it (its Department of Health), a
-- commune the Organization two levels below (its commune health station). An Organization
-- deeper in the tree counts with the commune-level Organization above it; one nearer the root
-- counts as itself at the levels below its own (people the Department manages itself form a
-- "commune" row of their own), so every person has exactly one unit at every level and units
-- add up to their parents. Hierarchies deeper than six levels are not supported.
WITH tree AS (
  SELECT o0.id AS org, o0.name AS name, o1.id AS up1, o2.id AS up2, o3.id AS up3,
         o4.id AS up4, o5.id AS up5
  FROM organization o0
  LEFT JOIN organization o1 ON o1.id = o0.part_of
  LEFT JOIN organization o2 ON o2.id = o1.part_of
  LEFT JOIN organization o3 ON o3.id = o2.part_of
  LEFT JOIN organization o4 ON o4.id = o3.part_of
  LEFT JOIN organization o5 ON o5.id = o4.part_of
), depth AS (
  SELECT org, name, up1, up2, up3, up4, up5,
         CASE WHEN up5 IS NOT NULL THEN 6 WHEN up4 IS NOT NULL THEN 5 WHEN up3 IS NOT NULL THEN 4
              WHEN up2 IS NOT NULL THEN 3 WHEN up1 IS NOT NULL THEN 2 ELSE 1 END AS depth
  FROM tree
)
SELECT org, name, depth,
       COALESCE(up5, up4, up3, up2, up1, org) AS nation,
       CASE depth WHEN 1 THEN org WHEN 2 THEN org WHEN 3 THEN up1 WHEN 4 THEN up2
                  WHEN 5 THEN up3 ELSE up4 END AS province,
       CASE depth WHEN 1 THEN org WHEN 2 THEN org WHEN 3 THEN org WHEN 4 THEN up1
                  WHEN 5 THEN up2 ELSE up3 END AS commune
FROM depth
