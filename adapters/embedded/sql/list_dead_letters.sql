-- Dead letters oldest first: of projection ?1 and aggregate ?2 unless null, closed ones
-- too when ?3 is true. The columns are those the letter decoder reads, in its order.
SELECT id, projection, event_id, position, transaction_id, aggregate_id, aggregate_type, event_type, version,
       error, error_class, attempts, first_failed_at, last_failed_at, status
FROM dead_letters
WHERE (?1 IS NULL OR projection = ?1) AND (?2 IS NULL OR aggregate_id = ?2) AND (?3 OR status = 'open')
ORDER BY id
