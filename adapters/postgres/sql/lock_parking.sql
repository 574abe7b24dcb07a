SELECT aggregate_id, from_version, dead_letter_id FROM parked_aggregates
WHERE projection = $1 AND aggregate_id = $2
FOR UPDATE
