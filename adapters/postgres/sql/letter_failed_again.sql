UPDATE dead_letters SET attempts = attempts + 1, error = $2, last_failed_at = now() WHERE id = $1
