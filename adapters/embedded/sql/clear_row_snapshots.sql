-- Drops the snapshots of projection ?1's row ?2 (the row is being rebuilt).
DELETE FROM snapshots WHERE projection = ?1 AND row_key = ?2
