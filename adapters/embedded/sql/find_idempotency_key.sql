-- ?1 key: the outcome of the append that first used it.
SELECT outcome FROM idempotency_keys WHERE key = ?1
