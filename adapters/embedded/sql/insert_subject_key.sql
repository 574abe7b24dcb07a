-- A subject's new key. ?1 subject, ?2 DEK version, ?3 KEK version, ?4 wrapped key, ?5 now.
INSERT INTO subject_keys (subject, dek_version, kek_version, wrapped, created_at)
VALUES (?1, ?2, ?3, ?4, ?5)
