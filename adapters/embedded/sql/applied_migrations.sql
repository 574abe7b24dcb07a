-- Every applied migration's version.
SELECT version FROM schema_migrations
