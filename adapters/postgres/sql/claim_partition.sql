-- Takes or renews the lease when it is free, expired or already ours, or (with $6, the
-- claimant holding its own session lock) held under a session lock that is free: its
-- owner's session is gone ([`rules::may_claim`]). The probe takes the lock exclusively and
-- lets it go at once; CASE keeps the release after the try. Owners whose lock this very
-- session holds ($8) are never probed: a session's own locks never block it, so they
-- would look gone. The claim must have been
-- split for the stored partition count. Returns the checkpoint, the parking epoch, and
-- the batch left in flight (if any) with the consecutive crashes.
UPDATE projection_state
SET lease_owner = $3, lease_expires_at = now() + make_interval(secs => $4), updated_at = now(),
    lease_locked = $6
WHERE projection = $1 AND partition = $2 AND partitions = $5
  AND (lease_owner IS NULL OR lease_owner = $3 OR lease_expires_at < now()
       OR ($6 AND lease_locked AND lease_owner <> ALL($8)
           AND CASE WHEN pg_try_advisory_lock(hashtextextended(lease_owner, $7))
                    THEN pg_advisory_unlock(hashtextextended(lease_owner, $7))
                    ELSE false END))
  -- A partition waiting for a rebuild is nobody's to run.
  AND status <> 'needs-rebuild'
RETURNING transaction_id, position, parking_epoch,
          in_flight_transaction_id, in_flight_position, in_flight_events, crashes
