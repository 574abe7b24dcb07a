-- ?1 key: the aggregate and request fingerprint it was first used with (either may be
-- null in keys stored before they were kept), and the outcome of that append.
SELECT aggregate_id, fingerprint, outcome FROM idempotency_keys WHERE key = ?1
