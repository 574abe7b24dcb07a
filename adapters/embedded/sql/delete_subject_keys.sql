-- Every key of subject ?1.
DELETE FROM subject_keys WHERE subject = ?1
