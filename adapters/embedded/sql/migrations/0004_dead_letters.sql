-- Failure handling: attempt history, dead letters, parked aggregates and the operator
-- audit trail. `parking_epoch` moves whenever a partition's parked set changes, so a
-- runner's batch commit notices an operator's repair made in between.
--
-- Same encodings as the other tables: uuids hyphenated lower-case text, timestamps
-- RFC 3339 UTC text with microseconds (text order is time order).
ALTER TABLE projection_checkpoints ADD COLUMN parking_epoch INTEGER NOT NULL DEFAULT 0;

-- Failed attempts per (projection, event), so a restart does not reset a retry budget.
CREATE TABLE IF NOT EXISTS event_failures (
    projection       TEXT NOT NULL,
    event_id         TEXT NOT NULL,
    attempts         INTEGER NOT NULL,
    first_failed_at  TEXT NOT NULL,
    last_failed_at   TEXT NOT NULL,
    last_error       TEXT NOT NULL,
    PRIMARY KEY (projection, event_id)
);

CREATE TABLE IF NOT EXISTS dead_letters (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    projection       TEXT NOT NULL REFERENCES projections (name) ON DELETE CASCADE,
    event_id         TEXT NOT NULL,
    position         INTEGER NOT NULL,
    transaction_id   INTEGER NOT NULL,
    aggregate_id     TEXT NOT NULL,
    aggregate_type   TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    version          INTEGER NOT NULL,
    error            TEXT NOT NULL,
    error_class      TEXT NOT NULL,
    attempts         INTEGER NOT NULL,
    first_failed_at  TEXT NOT NULL,
    last_failed_at   TEXT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'open',
    UNIQUE (projection, event_id)
);
CREATE INDEX IF NOT EXISTS idx_dead_letters_aggregate ON dead_letters (projection, aggregate_id);
CREATE INDEX IF NOT EXISTS idx_dead_letters_open ON dead_letters (projection) WHERE status = 'open';

-- An aggregate's read-model row stays at its last good state while it is parked here.
CREATE TABLE IF NOT EXISTS parked_aggregates (
    projection      TEXT NOT NULL REFERENCES projections (name) ON DELETE CASCADE,
    aggregate_id    TEXT NOT NULL,
    from_version    INTEGER NOT NULL,
    dead_letter_id  INTEGER NOT NULL REFERENCES dead_letters (id),
    parked_at       TEXT NOT NULL,
    PRIMARY KEY (projection, aggregate_id)
);

CREATE TABLE IF NOT EXISTS dead_letter_actions (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    dead_letter_id  INTEGER NOT NULL REFERENCES dead_letters (id) ON DELETE CASCADE,
    actor           TEXT NOT NULL,
    action          TEXT NOT NULL,
    at              TEXT NOT NULL,
    outcome         TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_dead_letter_actions_letter ON dead_letter_actions (dead_letter_id);
