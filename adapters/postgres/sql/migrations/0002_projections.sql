-- Projection bookkeeping: what each projection reads, and per partition its checkpoint,
-- lease and health. Leases are rows (not session locks) so they work through a
-- transaction-mode pooler.
CREATE TABLE IF NOT EXISTS projections (
    name        text PRIMARY KEY,
    table_name  text NOT NULL,
    filter      jsonb NOT NULL DEFAULT '{}'::jsonb,
    partitions  integer NOT NULL CHECK (partitions > 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS projection_state (
    projection        text NOT NULL REFERENCES projections (name) ON DELETE CASCADE,
    partition         integer NOT NULL,
    partitions        integer NOT NULL,
    transaction_id    xid8 NOT NULL DEFAULT '0'::xid8,
    position          bigint NOT NULL DEFAULT 0,
    status            text NOT NULL DEFAULT 'running',
    events_applied    bigint NOT NULL DEFAULT 0,
    error_count       bigint NOT NULL DEFAULT 0,
    last_error        text,
    last_event_at     timestamptz,
    lease_owner       text,
    lease_expires_at  timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, partition)
);
