-- Events from position $1 on (after $2, for paging): the rows a partial rebuild redoes.
SELECT position, transaction_id, event_id, aggregate_id, aggregate_type, event_type, event_data,
       metadata, version, timestamp, encrypted_fields
FROM events
WHERE position >= $1 AND position > $2
  AND ($3::text[] IS NULL OR event_type = ANY($3))
  AND ($4::text[] IS NULL OR aggregate_type = ANY($4))
  AND projector_bucket(aggregate_id, $5::bigint) = $6::bigint
ORDER BY position
LIMIT $7
