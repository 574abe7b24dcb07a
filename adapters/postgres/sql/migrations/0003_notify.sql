-- Wake listening runners once per appending statement (LISTEN projector_events).
-- Runners poll as well, so a pooler that drops notifications only adds latency.
CREATE OR REPLACE FUNCTION projector_notify_events() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('projector_events', '');
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS events_notify ON events;
CREATE TRIGGER events_notify AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION projector_notify_events();
