INSERT INTO parked_aggregates (projection, aggregate_id, from_version, dead_letter_id) VALUES ($1, $2, $3, $4)
ON CONFLICT (projection, aggregate_id) DO UPDATE
    SET from_version = EXCLUDED.from_version, dead_letter_id = EXCLUDED.dead_letter_id
