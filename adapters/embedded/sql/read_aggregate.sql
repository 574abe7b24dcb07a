-- One aggregate's events in version order: ?1 aggregate, versions ?2 < v <= ?3, and only
-- those stamped at or before ?4 unless it is null (time travel).
-- The columns are those the event decoder reads, in its order.
SELECT position, transaction_id, event_id, aggregate_id, aggregate_type, event_type, event_data, metadata,
       version, timestamp, encrypted_fields
FROM events
WHERE aggregate_id = ?1 AND version > ?2 AND version <= ?3 AND (?4 IS NULL OR timestamp <= ?4)
ORDER BY version
