-- Every partition of every projection with its lag window, open dead letters and parked
-- aggregates and events, and the store's clock to measure the lag against.
--
-- The lag window is at most $1 events past the checkpoint (any filter or partition), read
-- in commit order through `idx_events_commit_order`, so its cost does not grow with the
-- backlog: how many were read, how many are the partition's (its filter and bucket), the
-- last position read, when the store recorded the oldest of the partition's, and the head
-- position (the primary key's end). `rules::lag_from_window` turns it into a lag.
SELECT s.projection, s.partition, s.partitions, s.transaction_id, s.position, s.last_event_at, s.status,
       s.events_applied, s.error_count, s.last_error, s.lease_owner, s.lease_expires_at, s.updated_at,
       lag.matching, lag.oldest,
       dl.n, dl.oldest, pk.aggregates, pk.events, now(),
       lag.scanned, lag.last_position, head.position
FROM projection_state s
JOIN projections p ON p.name = s.projection
CROSS JOIN (SELECT coalesce(max(position), 0) AS position FROM events) head
CROSS JOIN LATERAL (
    SELECT count(*) AS scanned, count(*) FILTER (WHERE w.matches) AS matching,
           coalesce(max(w.position), s.position) AS last_position,
           min(w.recorded_at) FILTER (WHERE w.matches) AS oldest
    FROM (
        SELECT e.position, e.recorded_at,
               (coalesce(jsonb_array_length(p.filter -> 'event_types'), 0) = 0
                OR e.event_type IN (SELECT jsonb_array_elements_text(p.filter -> 'event_types')))
               AND (coalesce(jsonb_array_length(p.filter -> 'aggregate_types'), 0) = 0
                    OR e.aggregate_type IN (SELECT jsonb_array_elements_text(p.filter -> 'aggregate_types')))
               AND projector_bucket(e.aggregate_id, s.partitions) = s.partition AS matches
        FROM events e
        WHERE (e.transaction_id, e.position) > (s.transaction_id, s.position)
        ORDER BY e.transaction_id, e.position
        LIMIT $1
    ) w
) lag
CROSS JOIN LATERAL (
    SELECT count(*) AS n, min(d.first_failed_at) AS oldest
    FROM dead_letters d
    WHERE d.projection = s.projection AND d.status = 'open'
      AND projector_bucket(d.aggregate_id, s.partitions) = s.partition
) dl
CROSS JOIN LATERAL (
    SELECT count(*) AS aggregates,
           coalesce(sum((SELECT count(*) FROM events e
                         WHERE e.aggregate_id = k.aggregate_id AND e.version >= k.from_version
                           AND (e.transaction_id, e.position) <= (s.transaction_id, s.position))), 0)::bigint AS events
    FROM parked_aggregates k
    WHERE k.projection = s.projection
      AND projector_bucket(k.aggregate_id, s.partitions) = s.partition
) pk
ORDER BY s.projection, s.partition
