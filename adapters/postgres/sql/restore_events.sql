-- Puts back the originals migration $1 backed up at positions $2 < p <= $3, as stored,
-- behind a compare-and-set that moves its restore cursor from $2 to $3 and counts $4
-- restored events (only while it is rolling back with its cursor at $2); the snapshots of
-- their aggregates are dropped. The caller checks that $4 events were restored and rolls
-- back otherwise.
WITH migration AS (
    UPDATE event_migrations
    SET restored_upto = $3, events_restored = events_restored + $4
    WHERE id = $1 AND status = 'rolling_back' AND restored_upto = $2
    RETURNING id
), restored AS (
    UPDATE events e
    SET event_type = b.event_type, event_data = b.event_data, metadata = b.metadata
    FROM migration, event_migration_backups b
    WHERE b.migration_id = migration.id AND b.position > $2 AND b.position <= $3 AND e.position = b.position
    RETURNING e.position
), dropped AS (
    DELETE FROM snapshots
    WHERE aggregate_id IN (SELECT b.aggregate_id FROM migration, event_migration_backups b
                           WHERE b.migration_id = migration.id AND b.position > $2 AND b.position <= $3)
)
SELECT (SELECT count(*) FROM migration), (SELECT count(*) FROM restored)
