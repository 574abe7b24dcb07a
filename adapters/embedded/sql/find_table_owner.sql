-- ?1 table, ?2 projection: another projection that already writes the table.
SELECT name FROM projections WHERE table_name = ?1 AND name <> ?2
