SELECT id, projection, event_id, position, transaction_id, aggregate_id, aggregate_type, event_type, version,
       error, error_class, attempts, first_failed_at, last_failed_at, status
FROM dead_letters
WHERE id = $1
