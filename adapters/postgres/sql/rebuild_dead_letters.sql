-- The letters of events that failed in a rebuild of projection $1, and the parkings of
-- their aggregates (the lower version wins over a parking already there).
WITH guard AS (
    SELECT name AS projection FROM projections WHERE name = $1
), dl AS (
-- dead letters
), park AS (
-- parkings
)
SELECT id FROM dl
