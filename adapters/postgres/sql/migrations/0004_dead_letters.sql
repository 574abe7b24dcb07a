-- Failure handling: attempt history, dead letters, parked aggregates and the operator
-- audit trail. `parking_epoch` moves whenever a partition's parked set changes, so a
-- runner's batch commit notices an operator's repair made in between.
ALTER TABLE projection_state ADD COLUMN IF NOT EXISTS parking_epoch bigint NOT NULL DEFAULT 0;

CREATE TABLE IF NOT EXISTS event_failures (
    projection       text NOT NULL,
    event_id         uuid NOT NULL,
    attempts         integer NOT NULL,
    first_failed_at  timestamptz NOT NULL DEFAULT now(),
    last_failed_at   timestamptz NOT NULL DEFAULT now(),
    last_error       text NOT NULL,
    PRIMARY KEY (projection, event_id)
);

CREATE TABLE IF NOT EXISTS dead_letters (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    projection       text NOT NULL REFERENCES projections (name) ON DELETE CASCADE,
    event_id         uuid NOT NULL,
    position         bigint NOT NULL,
    transaction_id   xid8 NOT NULL,
    aggregate_id     uuid NOT NULL,
    aggregate_type   text NOT NULL,
    event_type       text NOT NULL,
    version          bigint NOT NULL,
    error            text NOT NULL,
    error_class      text NOT NULL,
    attempts         integer NOT NULL,
    first_failed_at  timestamptz NOT NULL,
    last_failed_at   timestamptz NOT NULL,
    status           text NOT NULL DEFAULT 'open',
    CONSTRAINT dead_letters_projection_event_key UNIQUE (projection, event_id)
);
CREATE INDEX IF NOT EXISTS idx_dead_letters_aggregate ON dead_letters (projection, aggregate_id);
CREATE INDEX IF NOT EXISTS idx_dead_letters_open ON dead_letters (projection) WHERE status = 'open';

-- An aggregate's read-model row stays at its last good state while it is parked here.
CREATE TABLE IF NOT EXISTS parked_aggregates (
    projection      text NOT NULL REFERENCES projections (name) ON DELETE CASCADE,
    aggregate_id    uuid NOT NULL,
    from_version    bigint NOT NULL,
    dead_letter_id  bigint NOT NULL REFERENCES dead_letters (id),
    parked_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, aggregate_id)
);

CREATE TABLE IF NOT EXISTS dead_letter_actions (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dead_letter_id  bigint NOT NULL REFERENCES dead_letters (id) ON DELETE CASCADE,
    actor           text NOT NULL,
    action          text NOT NULL,
    at              timestamptz NOT NULL DEFAULT now(),
    outcome         text NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_dead_letter_actions_letter ON dead_letter_actions (dead_letter_id);
