-- The partition's checkpoint row, locked: its runner's commits wait for the repair, then
-- find the parking epoch moved.
SELECT transaction_id, position FROM projection_state WHERE projection = $1 AND partition = $2 FOR UPDATE
