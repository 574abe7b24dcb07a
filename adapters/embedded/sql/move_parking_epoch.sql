-- ?1 projection, ?2 partition, ?3 now: the parked set changed, so a batch commit begun
-- before it fails its compare-and-set and the runner reads the set again.
UPDATE projection_state
SET parking_epoch = parking_epoch + 1, updated_at = ?3
WHERE projection = ?1 AND partition = ?2
