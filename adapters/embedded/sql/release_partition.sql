-- ?1 now, ?2 projection, ?3 partition, ?4 owner: gives the lease back if ?4 still holds it.
UPDATE projection_state
SET lease_owner = NULL, lease_expires_at = NULL, updated_at = ?1
WHERE projection = ?2 AND partition = ?3 AND lease_owner = ?4
