-- Drops every snapshot of the aggregates whose originals migration ?1 restores at
-- positions ?2 < p <= ?3.
DELETE FROM snapshots
WHERE aggregate_id IN (SELECT aggregate_id FROM event_migration_backups
                       WHERE migration_id = ?1 AND position > ?2 AND position <= ?3)
