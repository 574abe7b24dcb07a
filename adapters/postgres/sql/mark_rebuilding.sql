-- A partition waiting for a rebuild keeps saying so until the rebuild finishes (an
-- abandoned one must not hand it back to the runners).
UPDATE projection_state
SET status = CASE WHEN status = 'needs-rebuild' THEN status ELSE 'rebuilding' END, updated_at = now()
WHERE projection = $1
RETURNING 1
