-- Parks aggregate ?2 of projection ?1 from version ?3 on, behind dead letter ?4, at ?5.
-- An aggregate parked already stays parked from the lower of the two versions, behind
-- that version's letter.
INSERT INTO parked_aggregates (projection, aggregate_id, from_version, dead_letter_id, parked_at)
VALUES (?1, ?2, ?3, ?4, ?5)
ON CONFLICT (projection, aggregate_id) DO UPDATE
    SET from_version = MIN(parked_aggregates.from_version, excluded.from_version),
        dead_letter_id = CASE WHEN excluded.from_version < parked_aggregates.from_version
                              THEN excluded.dead_letter_id ELSE parked_aggregates.dead_letter_id END
