-- One aggregate's events in version order: versions $2 < v <= $3, up to time $4 if given.
SELECT position, transaction_id, event_id, aggregate_id, aggregate_type, event_type, event_data,
       metadata, version, timestamp, encrypted_fields
FROM events
WHERE aggregate_id = $1 AND version > $2 AND version <= $3
  AND ($4::timestamptz IS NULL OR timestamp <= $4)
ORDER BY version
