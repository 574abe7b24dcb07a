-- ?1 projection: its read-model table, filter (JSON) and partition count.
SELECT table_name, filter, partitions FROM projections WHERE name = ?1
