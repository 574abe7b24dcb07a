-- Parks the aggregates of the letters CTE `dl` returned; an aggregate parked already keeps
-- the lower version (and its letter).
INSERT INTO parked_aggregates (projection, aggregate_id, from_version, dead_letter_id)
SELECT DISTINCT ON (aggregate_id) projection, aggregate_id, version, id FROM dl
ORDER BY aggregate_id, version
ON CONFLICT (projection, aggregate_id) DO UPDATE
    SET from_version = LEAST(parked_aggregates.from_version, EXCLUDED.from_version),
        dead_letter_id = CASE WHEN EXCLUDED.from_version < parked_aggregates.from_version
                              THEN EXCLUDED.dead_letter_id ELSE parked_aggregates.dead_letter_id END
