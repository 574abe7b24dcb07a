-- One chunk of migration $1: a compare-and-set moves its cursor from $2 to $3 (only
-- while it is applying with its cursor at $2) and stores the checksums $11 / $12; each
-- event of the chunk ($4 positions) that still holds what the chunk read ($5 types,
-- $6 payloads, $7 metadata) is copied to the backup as stored and rewritten to $8 /
-- $9 / $10, and the snapshots of their aggregates are dropped. Every part sees the rows
-- as they were before the statement, so the backup holds the originals. The caller
-- compares the three counts and rolls back on any difference.
WITH migration AS (
    UPDATE event_migrations
    SET rewritten_upto = $3, events_rewritten = events_rewritten + cardinality($4::bigint[]),
        before_checksum = $11, after_checksum = $12
    WHERE id = $1 AND status = 'applying' AND rewritten_upto = $2
    RETURNING id
), chunk AS (
    SELECT *
    FROM unnest($4::bigint[], $5::text[], $6::jsonb[], $7::jsonb[], $8::text[], $9::jsonb[], $10::jsonb[])
         AS c(position, old_type, old_data, old_metadata, new_type, new_data, new_metadata)
), unchanged AS (
    SELECT e.position, e.event_id, e.aggregate_id, e.event_type, e.event_data, e.metadata, chunk.new_type,
           chunk.new_data, chunk.new_metadata
    FROM chunk JOIN events e ON e.position = chunk.position
    WHERE e.event_type = chunk.old_type AND e.event_data = chunk.old_data AND e.metadata = chunk.old_metadata
), backup AS (
    INSERT INTO event_migration_backups (migration_id, position, event_id, aggregate_id, event_type, event_data,
                                         metadata)
    SELECT migration.id, u.position, u.event_id, u.aggregate_id, u.event_type, u.event_data, u.metadata
    FROM migration, unchanged u
    RETURNING position
), rewritten AS (
    UPDATE events e
    SET event_type = u.new_type, event_data = u.new_data, metadata = u.new_metadata
    FROM migration, unchanged u
    WHERE e.position = u.position
    RETURNING e.position
), dropped AS (
    DELETE FROM snapshots
    WHERE aggregate_id IN (SELECT aggregate_id FROM unchanged) AND EXISTS (SELECT 1 FROM migration)
)
SELECT (SELECT count(*) FROM migration), (SELECT count(*) FROM backup), (SELECT count(*) FROM rewritten)
