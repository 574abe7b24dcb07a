-- ?1 version, ?2 name, ?3 applied at.
INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)
