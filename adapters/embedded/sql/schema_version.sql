-- The highest applied migration, 0 for a new file.
SELECT COALESCE(MAX(version), 0) FROM schema_migrations
