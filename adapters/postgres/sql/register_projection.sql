INSERT INTO projections (name, table_name, filter, partitions) VALUES ($1, $2, $3, $4)
ON CONFLICT (name) DO UPDATE SET table_name = EXCLUDED.table_name, filter = EXCLUDED.filter, updated_at = now()
