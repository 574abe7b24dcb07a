-- Takes or renews the lease when it is free, expired or already ours, and the claim was
-- split for the stored partition count. Returns the checkpoint, the parking epoch, and
-- the batch left in flight (if any) with the consecutive crashes.
UPDATE projection_state
SET lease_owner = $3, lease_expires_at = now() + make_interval(secs => $4), updated_at = now()
WHERE projection = $1 AND partition = $2 AND partitions = $5
  AND (lease_owner IS NULL OR lease_owner = $3 OR lease_expires_at < now())
  -- A partition waiting for a rebuild is nobody's to run.
  AND status <> 'needs-rebuild'
RETURNING transaction_id, position, parking_epoch,
          in_flight_transaction_id, in_flight_position, in_flight_events, crashes
