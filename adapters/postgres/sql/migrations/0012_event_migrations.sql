-- Eager migrations of stored events (`projector migrate`): one row per migration, and
-- the original of every event one rewrote, so that a rollback can put it back exactly
-- (the backup holds the same jsonb the event held). At most one migration is open
-- (applying or rolling back) at a time. Checksums are 16 hex digits.
CREATE TABLE IF NOT EXISTS event_migrations (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_types       text[] NOT NULL,
    upcasters         text[] NOT NULL,
    status            text NOT NULL CHECK (status IN ('applying', 'applied', 'rolling_back', 'rolled_back')),
    upto_position     bigint NOT NULL,
    rewritten_upto    bigint NOT NULL DEFAULT 0,
    restored_upto     bigint NOT NULL DEFAULT 0,
    events_planned    bigint NOT NULL,
    events_rewritten  bigint NOT NULL DEFAULT 0,
    events_restored   bigint NOT NULL DEFAULT 0,
    before_checksum   text NOT NULL,
    after_checksum    text NOT NULL,
    actor             text NOT NULL,
    started_at        timestamptz NOT NULL DEFAULT now(),
    applied_at        timestamptz,
    rolled_back_by    text,
    rolled_back_at    timestamptz,
    last_error        text
);

CREATE UNIQUE INDEX IF NOT EXISTS one_open_event_migration ON event_migrations ((status IN ('applying', 'rolling_back')))
    WHERE status IN ('applying', 'rolling_back');

-- The columns a rewrite replaced, as they were stored before it.
CREATE TABLE IF NOT EXISTS event_migration_backups (
    migration_id  bigint NOT NULL REFERENCES event_migrations (id),
    position      bigint NOT NULL,
    event_id      uuid NOT NULL,
    aggregate_id  uuid NOT NULL,
    event_type    text NOT NULL,
    event_data    jsonb NOT NULL,
    metadata      jsonb NOT NULL,
    PRIMARY KEY (migration_id, position)
);
