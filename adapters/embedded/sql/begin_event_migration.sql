-- A new migration, applying; the unique index on open migrations refuses a second one.
-- ?1 event types and ?2 upcasters (JSON arrays), ?3 last position, ?4 events planned,
-- ?5 actor, ?6 now, ?7 the empty checksum.
INSERT INTO event_migrations (event_types, upcasters, status, upto_position, events_planned, before_checksum,
                              after_checksum, actor, started_at)
VALUES (?1, ?2, 'applying', ?3, ?4, ?7, ?7, ?5, ?6)
RETURNING id
