-- The compare-and-set of a rewrite chunk: moves migration ?1's cursor from ?2 to ?3,
-- adds ?4 rewritten events and stores the checksums ?5 / ?6, only while it is applying
-- and its cursor is at ?2 (otherwise nothing changes).
UPDATE event_migrations
SET rewritten_upto = ?3, events_rewritten = events_rewritten + ?4, before_checksum = ?5, after_checksum = ?6
WHERE id = ?1 AND status = 'applying' AND rewritten_upto = ?2
