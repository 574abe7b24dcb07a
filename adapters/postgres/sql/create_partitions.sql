-- Partitions 0..$2-1, all starting at checkpoint ($3, $4).
INSERT INTO projection_state (projection, partition, partitions, transaction_id, position)
SELECT $1, p, $2, $3, $4 FROM generate_series(0, $2 - 1) AS p
