-- The event log. Immutable rows; per-aggregate order by `version`, global commit-safe
-- order by (transaction_id, position).
CREATE TABLE IF NOT EXISTS events (
    position         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_id   xid8 NOT NULL DEFAULT pg_current_xact_id(),
    event_id         uuid NOT NULL,
    aggregate_id     uuid NOT NULL,
    aggregate_type   text NOT NULL,
    event_type       text NOT NULL,
    event_data       jsonb NOT NULL,
    metadata         jsonb NOT NULL DEFAULT '{}'::jsonb,
    version          bigint NOT NULL CHECK (version > 0),
    timestamp        timestamptz NOT NULL DEFAULT now(),
    encrypted_fields text[] NOT NULL DEFAULT '{}',
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_aggregate_version_key UNIQUE (aggregate_id, version)
);

CREATE INDEX IF NOT EXISTS idx_events_aggregate_type ON events (aggregate_type);
CREATE INDEX IF NOT EXISTS idx_events_event_type ON events (event_type);
CREATE INDEX IF NOT EXISTS idx_events_timestamp ON events (timestamp);
-- Commit-safe global reads walk this index.
CREATE INDEX IF NOT EXISTS idx_events_commit_order ON events (transaction_id, position);

-- Appends with an idempotency key: a repeated key returns the first append's result.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key            text PRIMARY KEY,
    aggregate_id   uuid NOT NULL,
    first_version  bigint NOT NULL,
    last_version   bigint NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
