-- One more failed attempt of event ?2 for projection ?1 at ?3 with error ?4. Returns the
-- attempts so far, when the first one failed and when this one did.
INSERT INTO event_failures (projection, event_id, attempts, first_failed_at, last_failed_at, last_error)
VALUES (?1, ?2, 1, ?3, ?3, ?4)
ON CONFLICT (projection, event_id) DO UPDATE
    SET attempts = attempts + 1, last_failed_at = excluded.last_failed_at, last_error = excluded.last_error
RETURNING attempts, first_failed_at, last_failed_at
