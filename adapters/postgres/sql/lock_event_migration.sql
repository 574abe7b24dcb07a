-- Migration $1 (the columns of `event_migrations.sql`), locked until the transaction ends.
SELECT id, event_types, upcasters, status, upto_position, rewritten_upto, restored_upto, events_planned,
       events_rewritten, events_restored, before_checksum, after_checksum, actor, started_at, applied_at,
       rolled_back_by, rolled_back_at, last_error
FROM event_migrations
WHERE id = $1
FOR UPDATE
