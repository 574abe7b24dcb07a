-- ?1 projection, ?2 partition: the partition count the row was split for.
SELECT partitions FROM projection_state WHERE projection = ?1 AND partition = ?2
