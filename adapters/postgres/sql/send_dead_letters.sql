-- Dead letters of projection $1 sent outside a batch commit; nothing is stored (and no
-- row returned) when the projection is not registered.
WITH guard AS (
    SELECT name AS projection FROM projections WHERE name = $1
), dl AS (
-- dead letters
)
SELECT id FROM dl
