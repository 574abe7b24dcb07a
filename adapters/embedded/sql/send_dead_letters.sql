-- Stores one dead letter for projection ?1; a letter already stored for the event is
-- opened again and updated (delivery may repeat). The first failure time comes from the
-- attempt history when there is one, else it is now (?12). Returns the letter's id.
-- ?2 event, ?3 position, ?4 transaction id, ?5 aggregate, ?6 aggregate type, ?7 event
-- type, ?8 version, ?9 error, ?10 error class, ?11 attempts.
INSERT INTO dead_letters (projection, event_id, position, transaction_id, aggregate_id, aggregate_type,
                          event_type, version, error, error_class, attempts, first_failed_at, last_failed_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11,
        COALESCE((SELECT first_failed_at FROM event_failures WHERE projection = ?1 AND event_id = ?2), ?12), ?12)
ON CONFLICT (projection, event_id) DO UPDATE
    SET status = 'open', error = excluded.error, attempts = excluded.attempts,
        last_failed_at = excluded.last_failed_at
RETURNING id
