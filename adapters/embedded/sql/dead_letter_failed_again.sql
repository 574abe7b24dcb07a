-- ?1 dead letter, ?2 the new error, ?3 when.
UPDATE dead_letters SET attempts = attempts + 1, error = ?2, last_failed_at = ?3 WHERE id = ?1
