-- ?1 projection, ?2 why, ?3 now: every partition waits for a rebuild (its read-model
-- table is gone or does not match while its checkpoint is past the start).
UPDATE projection_state SET status = 'needs-rebuild', last_error = ?2, updated_at = ?3 WHERE projection = ?1
