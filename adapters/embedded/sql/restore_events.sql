-- Puts back the originals migration ?1 backed up at positions ?2 < p <= ?3, as stored.
UPDATE events
SET event_type = b.event_type, event_data = b.event_data, metadata = b.metadata
FROM event_migration_backups b
WHERE b.migration_id = ?1 AND b.position > ?2 AND b.position <= ?3 AND events.position = b.position
