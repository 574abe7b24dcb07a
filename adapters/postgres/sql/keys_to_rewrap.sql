-- Keys not wrapped under KEK version $1, after the key ($2 subject, $3 DEK version),
-- in key order; at most $4.
SELECT subject, dek_version, wrapped
FROM subject_keys
WHERE kek_version <> $1
  AND (subject COLLATE "C", dek_version) > ($2 COLLATE "C", $3)
ORDER BY subject COLLATE "C", dek_version
LIMIT $4
