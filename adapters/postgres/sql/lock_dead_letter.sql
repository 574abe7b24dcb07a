-- The letter a repair works on, locked so two repairs of one letter run one after the other.
SELECT id, projection, event_id, position, transaction_id, aggregate_id, aggregate_type, event_type, version,
       error, error_class, attempts, first_failed_at, last_failed_at, status
FROM dead_letters
WHERE id = $1 AND projection = $2
FOR UPDATE
