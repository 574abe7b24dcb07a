-- Snapshots of aggregate rows for time travel: a row's state (its values in schema order,
-- as JSON text the core encodes) after the event at `version` of its aggregate, taken
-- by `handler_version` through the upcaster chains `upcasters`. `at` is that event's
-- timestamp (RFC 3339 UTC text with microseconds).
CREATE TABLE IF NOT EXISTS snapshots (
    projection       TEXT    NOT NULL,
    row_key          TEXT    NOT NULL,
    version          INTEGER NOT NULL,
    aggregate_id     TEXT    NOT NULL,
    at               TEXT    NOT NULL,
    handler_version  INTEGER NOT NULL,
    upcasters        TEXT    NOT NULL,
    row              TEXT    NOT NULL,
    PRIMARY KEY (projection, row_key, version)
);

CREATE INDEX IF NOT EXISTS snapshots_by_aggregate ON snapshots (aggregate_id);
