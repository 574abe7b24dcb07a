-- A repair moves aggregate ?2 of projection ?1 to wait from version ?3 on, behind dead
-- letter ?4 (?5: when, for a new parking).
INSERT INTO parked_aggregates (projection, aggregate_id, from_version, dead_letter_id, parked_at)
VALUES (?1, ?2, ?3, ?4, ?5)
ON CONFLICT (projection, aggregate_id) DO UPDATE
    SET from_version = excluded.from_version, dead_letter_id = excluded.dead_letter_id
