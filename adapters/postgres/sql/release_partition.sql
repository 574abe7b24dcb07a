UPDATE projection_state SET lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
WHERE projection = $1 AND partition = $2 AND lease_owner = $3
