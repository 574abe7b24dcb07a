-- A rebuild's write transaction holds every checkpoint row of the projection: live
-- commits wait, then find their checkpoint moved.
SELECT partition FROM projection_state WHERE projection = $1 ORDER BY partition FOR UPDATE
