-- Writes the state of migration ?1 that a change (decided by the core's rule) leaves it
-- in: ?2 status, ?3 applied at, ?4 last error, ?5 apply cursor, ?6 rolled back by,
-- ?7 rolled back at.
UPDATE event_migrations
SET status = ?2, applied_at = ?3, last_error = ?4, rewritten_upto = ?5, rolled_back_by = ?6, rolled_back_at = ?7
WHERE id = ?1
