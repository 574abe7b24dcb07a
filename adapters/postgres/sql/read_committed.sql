-- Committed events in position order, without waiting for the read horizon (one-off
-- reads such as time travel; never for checkpointed processing).
SELECT position, transaction_id, event_id, aggregate_id, aggregate_type, event_type, event_data,
       metadata, version, timestamp, encrypted_fields
FROM events
WHERE position > $1
  AND ($2::text[] IS NULL OR event_type = ANY($2))
  AND ($3::text[] IS NULL OR aggregate_type = ANY($3))
  AND projector_bucket(aggregate_id, $4::bigint) = $5::bigint
ORDER BY position
LIMIT $6
