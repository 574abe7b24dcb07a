-- What each idempotency key's first append said (`rules::request_fingerprint`), so a key
-- reused for other events is refused instead of answered with the first outcome. Keys
-- stored before this column existed keep NULL and are compared by aggregate only.
ALTER TABLE idempotency_keys ADD COLUMN IF NOT EXISTS fingerprint text;
