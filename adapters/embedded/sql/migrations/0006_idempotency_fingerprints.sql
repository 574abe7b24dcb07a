-- Idempotency keys keep the aggregate they were used for and a fingerprint of the whole
-- request (`projector::store::rules::request_fingerprint`), as in the PostgreSQL store,
-- so a key reused for another request is refused instead of answered with the first
-- request's outcome. Keys stored before this have no fingerprint: for them only the
-- aggregate is compared, read here from the stored outcome.
ALTER TABLE idempotency_keys ADD COLUMN aggregate_id TEXT;
ALTER TABLE idempotency_keys ADD COLUMN fingerprint TEXT;
UPDATE idempotency_keys
SET aggregate_id = json_extract(outcome, '$.aggregate_id')
WHERE json_valid(outcome);
