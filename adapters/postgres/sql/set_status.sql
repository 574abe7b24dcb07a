-- $5 is 1 when this status counts as an error (`Status::counts_as_error`), else 0; $6 is
-- true when it clears the stored error text, unless $4 gives a new one
-- (`Status::clears_last_error`).
UPDATE projection_state
SET status = $3, last_error = coalesce($4, CASE WHEN $6 THEN NULL ELSE last_error END),
    error_count = error_count + $5, updated_at = now()
WHERE projection = $1 AND partition = $2
