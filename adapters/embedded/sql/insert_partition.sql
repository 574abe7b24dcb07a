-- ?1 projection, ?2 partition, ?3 partition count, ?4 / ?5 the starting checkpoint,
-- ?6 now.
INSERT INTO projection_state (projection, partition, partitions, transaction_id, position, status, updated_at)
VALUES (?1, ?2, ?3, ?4, ?5, 'running', ?6)
