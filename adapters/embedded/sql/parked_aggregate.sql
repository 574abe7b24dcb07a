-- ?1 projection, ?2 aggregate: its parking, if it is parked.
SELECT aggregate_id, from_version, dead_letter_id
FROM parked_aggregates
WHERE projection = ?1 AND aggregate_id = ?2
