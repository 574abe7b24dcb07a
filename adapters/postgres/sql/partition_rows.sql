-- A projection's partition rows as the rescale rule reads them.
SELECT partition, partitions, transaction_id, position FROM projection_state WHERE projection = $1
ORDER BY partition
