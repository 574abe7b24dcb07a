-- The events a partition has still to read after position ?1, measured in a window of at
-- most ?6 events (any filter or partition) read in position order through the primary
-- key, so its cost does not grow with the backlog: how many were read, how many are the
-- partition's (parameters ?2 to ?5 as in read_all.sql), the last position read, when the
-- store recorded the oldest of the partition's (its own clock, not the appender's
-- `timestamp`), and the head position. `rules::lag_from_window` turns it into a lag.
SELECT COUNT(*), COALESCE(SUM(w.matches), 0), COALESCE(MAX(w.position), ?1),
       MIN(CASE WHEN w.matches THEN w.recorded_at END),
       (SELECT COALESCE(MAX(position), 0) FROM events)
FROM (
    SELECT position, recorded_at,
           (?2 IS NULL OR event_type IN (SELECT value FROM json_each(?2)))
           AND (?3 IS NULL OR aggregate_type IN (SELECT value FROM json_each(?3)))
           AND (?4 <= 1 OR projector_bucket(aggregate_id, ?4) = ?5) AS matches
    FROM events
    WHERE position > ?1
    ORDER BY position
    LIMIT ?6
) w
