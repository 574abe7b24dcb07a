-- The partition's parked set changed: a runner's next commit with the old epoch is refused.
UPDATE projection_state SET parking_epoch = parking_epoch + 1, updated_at = now()
WHERE projection = $1 AND partition = $2
