-- A rebuild session dropped before it finished leaves its projection marked rebuilding.
UPDATE projection_state SET status = 'running', updated_at = now()
WHERE projection = $1 AND status = 'rebuilding'
