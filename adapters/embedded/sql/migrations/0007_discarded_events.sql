-- Events operators took out of a projection (`dlq skip` drops the dead-lettered event,
-- `dlq discard` the parked sequence): rebuilds, time travel and later repairs leave them
-- out, as live processing did. Same encodings as the other tables.
CREATE TABLE IF NOT EXISTS discarded_events (
    projection      TEXT NOT NULL REFERENCES projections (name) ON DELETE CASCADE,
    event_id        TEXT NOT NULL,
    aggregate_id    TEXT NOT NULL,
    version         INTEGER NOT NULL,
    dead_letter_id  INTEGER NOT NULL REFERENCES dead_letters (id) ON DELETE CASCADE,
    decision        TEXT NOT NULL,
    decided_at      TEXT NOT NULL,
    PRIMARY KEY (projection, event_id)
);
CREATE INDEX IF NOT EXISTS idx_discarded_events_aggregate ON discarded_events (projection, aggregate_id);

-- Letters closed before the decisions were kept: their own event is out. (The rest of a
-- sequence discarded then is not known; a rebuild applies it.)
INSERT OR IGNORE INTO discarded_events
    (projection, event_id, aggregate_id, version, dead_letter_id, decision, decided_at)
SELECT projection, event_id, aggregate_id, version, id, status, last_failed_at
FROM dead_letters WHERE status IN ('skipped', 'discarded');
