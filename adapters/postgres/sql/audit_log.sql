-- The newest audit rows first, of subject $1 (or of all when null); at most $2.
SELECT id, at, operation, subject, field_paths, dek_version, kek_version, event_id, actor, outcome,
       error_class, count
FROM crypto_audit
WHERE $1::text IS NULL OR subject = $1
ORDER BY id DESC
LIMIT $2
