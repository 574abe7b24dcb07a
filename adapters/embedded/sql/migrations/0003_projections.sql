-- Projection bookkeeping: what each projection reads, and per partition its checkpoint,
-- lease and health. Leases are rows: a runner owns a partition while
-- `lease_owner` is its name and `lease_expires_at` is in the future.
CREATE TABLE IF NOT EXISTS projections (
    name        TEXT PRIMARY KEY,
    table_name  TEXT NOT NULL,
    filter      TEXT NOT NULL DEFAULT '{}',
    partitions  INTEGER NOT NULL CHECK (partitions > 0)
);

CREATE TABLE IF NOT EXISTS projection_checkpoints (
    projection        TEXT NOT NULL,
    partition         INTEGER NOT NULL,
    partitions        INTEGER NOT NULL,
    transaction_id    INTEGER NOT NULL DEFAULT 0,
    position          INTEGER NOT NULL DEFAULT 0,
    lease_owner       TEXT,
    lease_expires_at  TEXT,
    status            TEXT NOT NULL DEFAULT 'running',
    events_applied    INTEGER NOT NULL DEFAULT 0,
    error_count       INTEGER NOT NULL DEFAULT 0,
    last_error        TEXT,
    last_event_at     TEXT,
    updated_at        TEXT NOT NULL,
    PRIMARY KEY (projection, partition)
);
