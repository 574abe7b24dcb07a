UPDATE dead_letters SET status = $2 WHERE id = $1 RETURNING projection
