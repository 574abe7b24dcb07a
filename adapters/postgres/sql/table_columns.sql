-- $1 table: the names of its columns in the current schema (none when it does not exist).
SELECT column_name::text FROM information_schema.columns
WHERE table_schema = current_schema() AND table_name = $1
