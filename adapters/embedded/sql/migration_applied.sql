-- Whether migration ?1 is recorded.
SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = ?1)
