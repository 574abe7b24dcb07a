-- ?1 name, ?2 read-model table, ?3 filter (JSON), ?4 partition count.
INSERT INTO projections (name, table_name, filter, partitions) VALUES (?1, ?2, ?3, ?4)
ON CONFLICT (name) DO UPDATE
    SET table_name = excluded.table_name, filter = excluded.filter, partitions = excluded.partitions
