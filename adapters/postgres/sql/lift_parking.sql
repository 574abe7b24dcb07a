DELETE FROM parked_aggregates WHERE projection = $1 AND aggregate_id = $2
