-- One more failed attempt of an event for a projection; the first failure's time stays.
-- Returns the attempts so far, when the first one failed and when this one did.
INSERT INTO event_failures (projection, event_id, attempts, last_error) VALUES ($1, $2, 1, $3)
ON CONFLICT (projection, event_id) DO UPDATE
    SET attempts = event_failures.attempts + 1, last_failed_at = now(), last_error = EXCLUDED.last_error
RETURNING attempts, first_failed_at, last_failed_at
