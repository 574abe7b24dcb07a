-- ?1 projection: its partition rows, as the rescale rule and a rebuild read them.
SELECT partition, partitions, transaction_id, position
FROM projection_state
WHERE projection = ?1
ORDER BY partition
