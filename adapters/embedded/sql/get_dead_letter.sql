-- Dead letter ?1, when it belongs to projection ?2 (any projection when null).
-- The columns are those the letter decoder reads, in its order.
SELECT id, projection, event_id, position, transaction_id, aggregate_id, aggregate_type, event_type, version,
       error, error_class, attempts, first_failed_at, last_failed_at, status
FROM dead_letters
WHERE id = ?1 AND (?2 IS NULL OR projection = ?2)
