-- Up to ?6 events after position ?1, in position order (which is commit order here).
-- ?2 / ?3: JSON arrays of the event types / aggregate types to read, null for all.
-- ?4 / ?5: partition count and index; a count of 1 or less reads every aggregate.
-- The columns are those the event decoder reads, in its order.
SELECT position, transaction_id, event_id, aggregate_id, aggregate_type, event_type, event_data, metadata,
       version, timestamp, encrypted_fields
FROM events
WHERE position > ?1
  AND (?2 IS NULL OR event_type IN (SELECT value FROM json_each(?2)))
  AND (?3 IS NULL OR aggregate_type IN (SELECT value FROM json_each(?3)))
  AND (?4 <= 1 OR projector_bucket(aggregate_id, ?4) = ?5)
ORDER BY position
LIMIT ?6
