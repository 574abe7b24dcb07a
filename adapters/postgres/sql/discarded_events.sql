-- $1 projection, $2 aggregate (null: every aggregate): the events operators took out.
SELECT event_id, aggregate_id, version, dead_letter_id, decision
FROM discarded_events
WHERE projection = $1 AND ($2::uuid IS NULL OR aggregate_id = $2)
ORDER BY aggregate_id, version
