-- ?1 dead letter, ?2 its new status.
UPDATE dead_letters SET status = ?2 WHERE id = ?1
