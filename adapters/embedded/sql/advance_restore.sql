-- The compare-and-set of a restore chunk: moves migration ?1's restore cursor from ?2 to
-- ?3 and adds ?4 restored events, only while it is rolling back with its cursor at ?2.
UPDATE event_migrations
SET restored_upto = ?3, events_restored = events_restored + ?4
WHERE id = ?1 AND status = 'rolling_back' AND restored_upto = ?2
