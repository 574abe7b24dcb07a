-- $5 is 1 when this status counts as an error (`Status::counts_as_error`), else 0.
UPDATE projection_state
SET status = $3, last_error = coalesce($4, last_error), error_count = error_count + $5, updated_at = now()
WHERE projection = $1 AND partition = $2
