-- The snapshot time travel starts from: of projection ?1, row ?2 and aggregate ?3, taken
-- by handler version ?4 through chains ?5, below version ?6, and, with an instant ?7,
-- holding no event of the aggregate stamped after it (events imported out of order).
SELECT projection, row_key, version, aggregate_id, at, handler_version, upcasters, row
FROM snapshots s
WHERE s.projection = ?1 AND s.row_key = ?2 AND s.aggregate_id = ?3 AND s.handler_version = ?4
  AND s.upcasters = ?5 AND s.version < ?6
  AND (?7 IS NULL OR (s.at <= ?7 AND NOT EXISTS (
        SELECT 1 FROM events e WHERE e.aggregate_id = s.aggregate_id AND e.version <= s.version AND e.timestamp > ?7)))
ORDER BY s.version DESC
LIMIT 1
