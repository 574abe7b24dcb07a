-- Keys not wrapped under KEK version ?1, after the key (?2 subject, ?3 DEK version), in
-- key order; at most ?4.
SELECT subject, dek_version, wrapped
FROM subject_keys
WHERE kek_version <> ?1
  AND (subject > ?2 OR (subject = ?2 AND dek_version > ?3))
ORDER BY subject, dek_version
LIMIT ?4
