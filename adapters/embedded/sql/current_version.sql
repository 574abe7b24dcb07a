-- ?1 aggregate: its highest version, 0 when it has no events.
SELECT COALESCE(MAX(version), 0) FROM events WHERE aggregate_id = ?1
