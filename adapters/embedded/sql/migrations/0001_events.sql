-- The event log. Immutable rows; per-aggregate order by `version`, global order by
-- `position`. SQLite serializes writers and positions are assigned inside the writing
-- transaction, so position order is commit order and `transaction_id` is always 0.
--
-- Text encodings (chosen so that text order is value order where it matters):
--   uuids       hyphenated lower-case
--   timestamps  RFC 3339 UTC with microseconds: 2026-03-01T12:00:00.000000Z
--   JSON        compact serde_json text
CREATE TABLE IF NOT EXISTS events (
    position         INTEGER PRIMARY KEY AUTOINCREMENT,
    transaction_id   INTEGER NOT NULL DEFAULT 0,
    event_id         TEXT NOT NULL UNIQUE,
    aggregate_id     TEXT NOT NULL,
    aggregate_type   TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    event_data       TEXT NOT NULL,
    metadata         TEXT NOT NULL DEFAULT '{}',
    version          INTEGER NOT NULL CHECK (version > 0),
    timestamp        TEXT NOT NULL,
    encrypted_fields TEXT NOT NULL DEFAULT '[]',
    UNIQUE (aggregate_id, version)
);

CREATE INDEX IF NOT EXISTS idx_events_aggregate_type ON events (aggregate_type, position);
CREATE INDEX IF NOT EXISTS idx_events_event_type ON events (event_type, position);
CREATE INDEX IF NOT EXISTS idx_events_timestamp ON events (timestamp);
