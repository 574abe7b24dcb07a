-- The end of a rebuild: every partition of projection ?6 at checkpoint ?1 / ?2, caught up.
-- ?3 events applied (counted on partition 0), ?4 last event time (null keeps it), ?5 now.
UPDATE projection_state
SET transaction_id = ?1, position = ?2, status = 'caught-up',
    events_applied = events_applied + CASE WHEN partition = 0 THEN ?3 ELSE 0 END,
    last_event_at = COALESCE(?4, last_event_at), updated_at = ?5
WHERE projection = ?6
