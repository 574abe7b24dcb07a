-- Fences a subject, deletes its keys and writes the audit row, in one statement.
-- $1 subject, $2 actor. Returns the keys deleted and whether the fence was already there.
WITH fence AS (
    INSERT INTO erased_subjects (subject, actor)
    VALUES ($1, $2)
    ON CONFLICT (subject) DO NOTHING
    RETURNING subject
), gone AS (
    DELETE FROM subject_keys
    WHERE subject = $1
    RETURNING dek_version
), audit AS (
    INSERT INTO crypto_audit (operation, subject, actor, outcome, count)
    VALUES ('shred', $1, $2, 'ok', 1)
)
SELECT (SELECT count(*) FROM gone) AS keys_deleted,
       NOT EXISTS (SELECT 1 FROM fence) AS already_erased
