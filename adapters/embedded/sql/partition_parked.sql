-- ?1 projection, ?2 / ?3 partition count and index, ?4 / ?5 its checkpoint: the parked
-- aggregates and the events waiting behind them that the partition has passed (later
-- events are lag, not parked).
SELECT COUNT(*),
       COALESCE(SUM((SELECT COUNT(*) FROM events e
                      WHERE e.aggregate_id = k.aggregate_id AND e.version >= k.from_version
                        AND (e.transaction_id, e.position) <= (?4, ?5))), 0)
FROM parked_aggregates k
WHERE k.projection = ?1 AND (?2 <= 1 OR projector_bucket(k.aggregate_id, ?2) = ?3)
