-- ?1 key, ?2 the outcome (JSON), ?3 when; in the append's transaction.
INSERT INTO idempotency_keys (key, outcome, created_at) VALUES (?1, ?2, ?3)
