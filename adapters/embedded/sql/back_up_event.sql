-- Copies event ?2's replaced columns into migration ?1's backup, provided they are still
-- what the chunk read (?3 type, ?4 payload, ?5 metadata, compared as JSON values).
INSERT INTO event_migration_backups (migration_id, position, event_id, aggregate_id, event_type, event_data, metadata)
SELECT ?1, position, event_id, aggregate_id, event_type, event_data, metadata
FROM events
WHERE position = ?2 AND event_type = ?3 AND json(event_data) = json(?4) AND json(metadata) = json(?5)
