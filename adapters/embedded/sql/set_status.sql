-- ?1 status, ?2 now, ?3 1 when this counts as an error, ?4 error text (null keeps the
-- last one), ?5 projection, ?6 partition.
UPDATE projection_state
SET status = ?1, updated_at = ?2, error_count = error_count + ?3, last_error = COALESCE(?4, last_error)
WHERE projection = ?5 AND partition = ?6
