-- ?1 status, ?2 now, ?3 1 when this counts as an error, ?4 error text (null keeps the
-- last one), ?5 projection, ?6 partition, ?7 1 when the status clears the error text
-- (`Status::clears_last_error`).
UPDATE projection_state
SET status = ?1, updated_at = ?2, error_count = error_count + ?3,
    last_error = CASE WHEN ?7 = 1 THEN NULL ELSE COALESCE(?4, last_error) END
WHERE projection = ?5 AND partition = ?6
