-- One subject's erasure fence and newest key. $1 subject.
SELECT EXISTS (SELECT 1 FROM erased_subjects WHERE subject = $1) AS erased,
       k.dek_version,
       k.wrapped
FROM (SELECT 1) AS one
LEFT JOIN LATERAL (
    SELECT dek_version, wrapped
    FROM subject_keys
    WHERE subject = $1
    ORDER BY dek_version DESC
    LIMIT 1
) AS k ON true
