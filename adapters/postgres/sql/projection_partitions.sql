SELECT partitions FROM projection_state WHERE projection = $1 LIMIT 1
