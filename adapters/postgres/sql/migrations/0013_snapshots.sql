-- Snapshots of aggregate rows for time travel: a row's state (its values in schema order,
-- as JSON text the core encodes) after the event at `version` of its aggregate, taken
-- by `handler_version` through the upcaster chains `upcasters`; `at` is that event's
-- timestamp.
CREATE TABLE IF NOT EXISTS snapshots (
    projection       text NOT NULL,
    row_key          text NOT NULL,
    version          bigint NOT NULL,
    aggregate_id     uuid NOT NULL,
    at               timestamptz NOT NULL,
    handler_version  integer NOT NULL,
    upcasters        text NOT NULL,
    row              text NOT NULL,
    PRIMARY KEY (projection, row_key, version)
);

CREATE INDEX IF NOT EXISTS snapshots_by_aggregate ON snapshots (aggregate_id);
