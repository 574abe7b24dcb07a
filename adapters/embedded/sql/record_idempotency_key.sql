-- ?1 key, ?2 aggregate, ?3 request fingerprint, ?4 the outcome (JSON), ?5 when; in the
-- append's transaction.
INSERT INTO idempotency_keys (key, aggregate_id, fingerprint, outcome, created_at) VALUES (?1, ?2, ?3, ?4, ?5)
