-- Stores a subject's first key with its audit row. $1 subject, $2 DEK version,
-- $3 KEK version, $4 wrapped key, $5 actor.
WITH key AS (
    INSERT INTO subject_keys (subject, dek_version, kek_version, wrapped)
    VALUES ($1, $2, $3, $4)
    RETURNING subject, dek_version, kek_version
)
INSERT INTO crypto_audit (operation, subject, dek_version, kek_version, actor, outcome)
SELECT 'provision', subject, dek_version, kek_version, $5, 'ok' FROM key
