-- ?1 projection, ?2 aggregate: the partition the aggregate falls in, and its checkpoint.
SELECT partition, transaction_id, position
FROM projection_state
WHERE projection = ?1 AND partition = projector_bucket(?2, partitions)
