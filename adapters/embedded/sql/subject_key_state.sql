-- One subject's erasure fence and newest key. ?1 subject.
SELECT EXISTS (SELECT 1 FROM erased_subjects WHERE subject = ?1) AS erased,
       (SELECT dek_version FROM subject_keys WHERE subject = ?1 ORDER BY dek_version DESC LIMIT 1),
       (SELECT wrapped FROM subject_keys WHERE subject = ?1 ORDER BY dek_version DESC LIMIT 1)
