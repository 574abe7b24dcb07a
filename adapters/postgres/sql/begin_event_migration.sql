-- A new migration, applying; the unique index on open migrations refuses a second one.
-- $1 event types, $2 upcasters, $3 last position, $4 events planned, $5 actor, $6 the
-- empty checksum.
INSERT INTO event_migrations (event_types, upcasters, status, upto_position, events_planned, before_checksum,
                              after_checksum, actor)
VALUES ($1, $2, 'applying', $3, $4, $6, $6, $5)
RETURNING id, event_types, upcasters, status, upto_position, rewritten_upto, restored_upto, events_planned,
          events_rewritten, events_restored, before_checksum, after_checksum, actor, started_at, applied_at,
          rolled_back_by, rolled_back_at, last_error
