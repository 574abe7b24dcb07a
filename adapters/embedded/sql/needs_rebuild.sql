-- ?1 projection: 1 when a partition waits for a rebuild.
SELECT EXISTS (SELECT 1 FROM projection_state WHERE projection = ?1 AND status = 'needs-rebuild')
