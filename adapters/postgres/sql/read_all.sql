-- The commit-safe global read: only below the oldest running transaction's id, so an
-- event is never returned while an earlier-ordered one could still commit. Metadata is
-- left out (NULL) when $8 is true.
SELECT position, transaction_id, event_id, aggregate_id, aggregate_type, event_type, event_data,
       CASE WHEN $8 THEN NULL ELSE metadata END, version, timestamp, encrypted_fields
FROM events
WHERE (transaction_id, position) > ($1::xid8, $2::bigint)
  AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
  AND ($3::text[] IS NULL OR event_type = ANY($3))
  AND ($4::text[] IS NULL OR aggregate_type = ANY($4))
  AND projector_bucket(aggregate_id, $5::bigint) = $6::bigint
ORDER BY transaction_id, position
LIMIT $7
