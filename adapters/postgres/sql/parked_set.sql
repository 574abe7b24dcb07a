-- The parked aggregates of a projection that fall in partition $3 of $2.
SELECT aggregate_id, from_version, dead_letter_id FROM parked_aggregates
WHERE projection = $1 AND projector_bucket(aggregate_id, $2) = $3
