-- When the store wrote each event, by its own clock. `timestamp` is what the appender
-- says happened (an import keeps its history's dates); lag and alerts measure from
-- `recorded_at`, so a client's odd clock can neither hide lag nor invent decades of it.
-- Events stored before this column existed take their timestamp, never a future one.
ALTER TABLE events ADD COLUMN recorded_at timestamptz;

UPDATE events SET recorded_at = least(timestamp, now());

ALTER TABLE events ALTER COLUMN recorded_at SET DEFAULT now(),
                   ALTER COLUMN recorded_at SET NOT NULL;
