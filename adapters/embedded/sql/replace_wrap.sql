-- Moves one key to a new wrap if it still holds the old one. ?1 subject, ?2 DEK version,
-- ?3 old wrap, ?4 new KEK version, ?5 new wrap, ?6 now. Changes one row when it moved.
UPDATE subject_keys
SET kek_version = ?4, wrapped = ?5, rewrapped_at = ?6
WHERE subject = ?1 AND dek_version = ?2 AND wrapped = ?3
