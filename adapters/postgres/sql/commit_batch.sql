-- A batch commit in one statement. CTE `guard` is the compare-and-set on the partition:
-- it moves the checkpoint only while the lease, the checkpoint, the parking epoch and the
-- registered table are what the runner saw. The dead letters, parkings and row writes
-- spliced in below write only when `guard` returned its row. The batch is no longer in
-- flight.
WITH guard AS (
    UPDATE projection_state
    SET transaction_id = $8, position = $9, lease_expires_at = now() + make_interval(secs => $10),
        events_applied = events_applied + $11, last_event_at = coalesce($12, last_event_at),
        status = CASE WHEN status = 'rebuilding' THEN status ELSE 'running' END,
        parking_epoch = parking_epoch + $13, updated_at = now(),
        in_flight_transaction_id = NULL, in_flight_position = NULL, in_flight_events = NULL
    WHERE projection = $1 AND partition = $2 AND lease_owner = $3
      AND transaction_id = $4 AND position = $5 AND parking_epoch = $6
      AND EXISTS (SELECT 1 FROM projections WHERE name = $1 AND table_name = $7)
    RETURNING projection
)
-- batch writes
-- The read model is derived data: a batch whose commit is lost in a crash is lost with its
-- checkpoint and applied again, so the commit need not wait for the WAL flush. Set inside
-- the statement, it lasts for this transaction only.
, async_commit AS (SELECT set_config('synchronous_commit', 'off', true))
SELECT count(*) FROM guard, async_commit
