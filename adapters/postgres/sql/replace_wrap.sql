-- Moves one key to a new wrap if it still holds the old one, with its audit row.
-- $1 subject, $2 DEK version, $3 old wrap, $4 new KEK version, $5 new wrap, $6 actor.
WITH moved AS (
    UPDATE subject_keys
    SET kek_version = $4, wrapped = $5, rewrapped_at = now()
    WHERE subject = $1 AND dek_version = $2 AND wrapped = $3
    RETURNING subject, dek_version, kek_version
)
INSERT INTO crypto_audit (operation, subject, dek_version, kek_version, actor, outcome)
SELECT 'rewrap', subject, dek_version, kek_version, $6, 'ok' FROM moved
RETURNING id
