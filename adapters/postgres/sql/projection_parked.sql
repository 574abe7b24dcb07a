-- Every parked aggregate of projection $1, whatever its partition.
SELECT aggregate_id, from_version, dead_letter_id FROM parked_aggregates WHERE projection = $1
