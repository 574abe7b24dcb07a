-- One audit row. ?1 time, ?2 operation, ?3 subject, ?4 field paths (JSON array),
-- ?5 DEK version, ?6 KEK version, ?7 event id, ?8 actor, ?9 outcome, ?10 error class,
-- ?11 count.
INSERT INTO crypto_audit
    (at, operation, subject, field_paths, dek_version, kek_version, event_id, actor, outcome, error_class, count)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
