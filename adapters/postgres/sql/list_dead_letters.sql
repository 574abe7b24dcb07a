-- Letters by projection ($1) and aggregate ($2) when given, open ones unless $3.
SELECT id, projection, event_id, position, transaction_id, aggregate_id, aggregate_type, event_type, version,
       error, error_class, attempts, first_failed_at, last_failed_at, status
FROM dead_letters
WHERE ($1::text IS NULL OR projection = $1)
  AND ($2::uuid IS NULL OR aggregate_id = $2)
  AND ($3 OR status = 'open')
ORDER BY id
