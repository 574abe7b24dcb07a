-- The erasure fence of a subject; a second shred leaves the first fence. ?1 subject,
-- ?2 now, ?3 actor. Changes one row when the fence is new.
INSERT INTO erased_subjects (subject, erased_at, actor)
VALUES (?1, ?2, ?3)
ON CONFLICT (subject) DO NOTHING
