-- Takes or renews the lease when the partition is free, expired or already ?1's.
-- ?1 owner, ?2 lease expiry, ?3 now, ?4 projection, ?5 partition. Returns nothing when
-- another owner holds it; otherwise the checkpoint and parking epoch to work from, and
-- the batch left in flight (if any) with the consecutive crashes.
UPDATE projection_state
SET lease_owner = ?1, lease_expires_at = ?2, updated_at = ?3
WHERE projection = ?4 AND partition = ?5
  AND (lease_owner IS NULL OR lease_owner = ?1 OR lease_expires_at IS NULL OR lease_expires_at < ?3)
  -- A partition waiting for a rebuild is nobody's to run.
  AND status <> 'needs-rebuild'
RETURNING transaction_id, position, parking_epoch,
          in_flight_transaction_id, in_flight_position, in_flight_events, crashes
