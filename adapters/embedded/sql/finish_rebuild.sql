-- The end of a rebuild, for partition ?7 of projection ?6: at checkpoint ?1 / ?2, caught
-- up, ?3 more events applied (its share of the rebuild's count), ?4 last event time (null
-- keeps it), ?5 now. The parking epoch moves: the rebuild may have parked aggregates.
UPDATE projection_state
SET transaction_id = ?1, position = ?2, status = 'caught-up', events_applied = events_applied + ?3,
    last_event_at = COALESCE(?4, last_event_at), updated_at = ?5, parking_epoch = parking_epoch + 1
WHERE projection = ?6 AND partition = ?7
