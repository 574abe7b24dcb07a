-- The erasure fence and newest key of each subject, in the order asked. $1 subjects.
SELECT EXISTS (SELECT 1 FROM erased_subjects AS e WHERE e.subject = s.subject) AS erased,
       k.dek_version,
       k.wrapped
FROM unnest($1::text[]) WITH ORDINALITY AS s (subject, n)
LEFT JOIN LATERAL (
    SELECT dek_version, wrapped
    FROM subject_keys
    WHERE subject = s.subject
    ORDER BY dek_version DESC
    LIMIT 1
) AS k ON true
ORDER BY s.n
