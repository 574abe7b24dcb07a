-- ?1 projection: a row when it is registered.
SELECT 1 FROM projections WHERE name = ?1
