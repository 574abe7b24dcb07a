-- Records that event ?2 (aggregate ?3, version ?4) is out of projection ?1, by the repair
-- of dead letter ?5 with decision ?6, at ?7. The first decision on an event stands.
INSERT INTO discarded_events (projection, event_id, aggregate_id, version, dead_letter_id, decision, decided_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
ON CONFLICT (projection, event_id) DO NOTHING
