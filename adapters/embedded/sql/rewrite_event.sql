-- Rewrites event ?1 to type ?2, payload ?3 and metadata ?4, provided it still holds type
-- ?5, payload ?6 and metadata ?7 (compared as JSON values). Nothing else of the row
-- changes: position, version and timestamps stay.
UPDATE events
SET event_type = ?2, event_data = ?3, metadata = ?4
WHERE position = ?1 AND event_type = ?5 AND json(event_data) = json(?6) AND json(metadata) = json(?7)
