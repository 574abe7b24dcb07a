UPDATE projection_state SET status = 'rebuilding', updated_at = now() WHERE projection = $1
RETURNING 1
