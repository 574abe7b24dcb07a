-- ?1 status, ?2 now, ?3 1 when this counts as an error, ?4 error text (null keeps the
-- last one, or clears it when ?7 is 1: `Status::clears_last_error`), ?5 projection,
-- ?6 partition.
UPDATE projection_state
SET status = ?1, updated_at = ?2, error_count = error_count + ?3,
    last_error = COALESCE(?4, CASE WHEN ?7 = 1 THEN NULL ELSE last_error END)
WHERE projection = ?5 AND partition = ?6
