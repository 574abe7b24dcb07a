-- Up to ?3 backed-up originals of migration ?1 after position ?2, each beside the event
-- as stored now (NULLs when its row is gone).
SELECT b.position, b.event_id, b.aggregate_id, b.event_type, b.event_data, b.metadata,
       e.event_type, e.event_data, e.metadata, e.encrypted_fields
FROM event_migration_backups b
LEFT JOIN events e ON e.position = b.position
WHERE b.migration_id = ?1 AND b.position > ?2
ORDER BY b.position
LIMIT ?3
