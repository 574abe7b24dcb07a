-- Appends with an idempotency key: a repeated key returns the first append's outcome
-- (an `AppendOutcome` as JSON) and writes nothing.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key        TEXT PRIMARY KEY,
    outcome    TEXT NOT NULL,
    created_at TEXT NOT NULL
);
