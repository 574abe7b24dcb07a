-- Records the batch the lease holder $3 is about to apply ($4 / $5 its end, $6 its event
-- count; all null: none) and the consecutive crashes $7, and renews the lease for $8
-- seconds. $1 projection, $2 partition.
-- The record only has to outlive the runner process, not the server: committing it
-- without waiting for the WAL flush saves a disk sync per batch, and the batch's own
-- commit flushes it anyway.
WITH no_flush AS (SELECT set_config('synchronous_commit', 'off', true))
UPDATE projection_state
SET in_flight_transaction_id = $4, in_flight_position = $5, in_flight_events = $6, crashes = $7,
    lease_expires_at = now() + make_interval(secs => $8)
FROM no_flush
WHERE projection = $1 AND partition = $2 AND lease_owner = $3
