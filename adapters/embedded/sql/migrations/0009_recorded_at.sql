-- When the store wrote each event, by its own clock. `timestamp` is what the appender
-- says happened (an import keeps its history's dates); lag and alerts measure from
-- `recorded_at`, so a client's odd clock can neither hide lag nor invent decades of it.
-- Events stored before this column existed take their timestamp, never a future one.
ALTER TABLE events ADD COLUMN recorded_at TEXT NOT NULL DEFAULT '';

UPDATE events
SET recorded_at = min(timestamp, strftime('%Y-%m-%dT%H:%M:%f000Z', 'now'));

CREATE INDEX IF NOT EXISTS idx_events_recorded_at ON events (recorded_at);
