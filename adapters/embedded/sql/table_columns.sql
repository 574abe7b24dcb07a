-- ?1 table: the names of its columns (none when the table does not exist).
SELECT name FROM pragma_table_info(?1)
