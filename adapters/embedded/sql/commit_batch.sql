-- The compare-and-set of a batch commit: moves the checkpoint only while ?10 holds the
-- lease, the projection still writes table ?15, and the partition is where the batch
-- started (checkpoint ?11 / ?12, parking epoch ?13). ?14 is 1 when the batch parks
-- aggregates, which moves the epoch. The batch is no longer in flight.
-- ?1 / ?2 new checkpoint, ?3 lease expiry, ?4 status, ?5 events applied, ?6 last event
-- time (null keeps it), ?7 now, ?8 projection, ?9 partition.
-- No row changed: nothing is written, and the caller finds out why.
UPDATE projection_state
SET transaction_id = ?1, position = ?2, lease_expires_at = ?3, status = ?4,
    events_applied = events_applied + ?5, last_event_at = COALESCE(?6, last_event_at), updated_at = ?7,
    parking_epoch = parking_epoch + ?14,
    in_flight_transaction_id = NULL, in_flight_position = NULL, in_flight_events = NULL
WHERE projection = ?8 AND partition = ?9 AND lease_owner = ?10
  AND transaction_id = ?11 AND position = ?12 AND parking_epoch = ?13
  AND EXISTS (SELECT 1 FROM projections WHERE name = ?8 AND table_name = ?15)
