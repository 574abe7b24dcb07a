-- Eager migrations of stored events (`projector migrate`): one row per migration, and
-- the original of every event one rewrote, so that a rollback can put it back exactly.
-- At most one migration is open (applying or rolling back) at a time.
--
-- Timestamps RFC 3339 UTC text with microseconds; `event_types` and `upcasters` JSON
-- arrays of strings; checksums 16 hex digits.
CREATE TABLE IF NOT EXISTS event_migrations (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    event_types       TEXT    NOT NULL,
    upcasters         TEXT    NOT NULL,
    status            TEXT    NOT NULL
                      CHECK (status IN ('applying', 'applied', 'rolling_back', 'rolled_back')),
    upto_position     INTEGER NOT NULL,
    rewritten_upto    INTEGER NOT NULL DEFAULT 0,
    restored_upto     INTEGER NOT NULL DEFAULT 0,
    events_planned    INTEGER NOT NULL,
    events_rewritten  INTEGER NOT NULL DEFAULT 0,
    events_restored   INTEGER NOT NULL DEFAULT 0,
    before_checksum   TEXT    NOT NULL,
    after_checksum    TEXT    NOT NULL,
    actor             TEXT    NOT NULL,
    started_at        TEXT    NOT NULL,
    applied_at        TEXT,
    rolled_back_by    TEXT,
    rolled_back_at    TEXT,
    last_error        TEXT
);

CREATE UNIQUE INDEX IF NOT EXISTS one_open_event_migration ON event_migrations ((status IN ('applying', 'rolling_back')))
    WHERE status IN ('applying', 'rolling_back');

-- The columns a rewrite replaced, as they were stored before it.
CREATE TABLE IF NOT EXISTS event_migration_backups (
    migration_id  INTEGER NOT NULL REFERENCES event_migrations (id),
    position      INTEGER NOT NULL,
    event_id      TEXT    NOT NULL,
    aggregate_id  TEXT    NOT NULL,
    event_type    TEXT    NOT NULL,
    event_data    TEXT    NOT NULL,
    metadata      TEXT    NOT NULL,
    PRIMARY KEY (migration_id, position)
);
