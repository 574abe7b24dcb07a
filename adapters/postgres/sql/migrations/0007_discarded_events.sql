-- Events operators took out of a projection (`dlq skip` drops the dead-lettered event,
-- `dlq discard` the parked sequence): rebuilds, time travel and later repairs leave them
-- out, as live processing did.
CREATE TABLE IF NOT EXISTS discarded_events (
    projection      text NOT NULL REFERENCES projections (name) ON DELETE CASCADE,
    event_id        uuid NOT NULL,
    aggregate_id    uuid NOT NULL,
    version         bigint NOT NULL,
    dead_letter_id  bigint NOT NULL REFERENCES dead_letters (id) ON DELETE CASCADE,
    decision        text NOT NULL,
    decided_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, event_id)
);
CREATE INDEX IF NOT EXISTS idx_discarded_events_aggregate ON discarded_events (projection, aggregate_id);

-- Letters closed before the decisions were kept: their own event is out. (The rest of a
-- sequence discarded then is not known; a rebuild applies it.)
INSERT INTO discarded_events (projection, event_id, aggregate_id, version, dead_letter_id, decision, decided_at)
SELECT projection, event_id, aggregate_id, version, id, status, last_failed_at
FROM dead_letters WHERE status IN ('skipped', 'discarded')
ON CONFLICT (projection, event_id) DO NOTHING;
