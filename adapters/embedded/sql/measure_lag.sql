-- The events a partition has still to read after position ?1: how many, and when the
-- store recorded the oldest of them (its own clock, not the appender's `timestamp`). Parameters ?2 to ?5 as in read_all.sql.
SELECT COUNT(*), MIN(recorded_at)
FROM events
WHERE position > ?1
  AND (?2 IS NULL OR event_type IN (SELECT value FROM json_each(?2)))
  AND (?3 IS NULL OR aggregate_type IN (SELECT value FROM json_each(?3)))
  AND (?4 <= 1 OR projector_bucket(aggregate_id, ?4) = ?5)
