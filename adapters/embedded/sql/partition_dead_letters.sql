-- ?1 projection, ?2 / ?3 partition count and index: its open dead letters and the
-- earliest first failure among them.
SELECT COUNT(*), MIN(first_failed_at)
FROM dead_letters
WHERE projection = ?1 AND status = 'open' AND (?2 <= 1 OR projector_bucket(aggregate_id, ?2) = ?3)
