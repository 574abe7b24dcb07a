-- The keyring's own changes join the crypto audit trail: `rotate` (a new primary
-- key-encryption key) and `retire` (a raised minimum version). SQLite cannot change a
-- CHECK constraint in place, so the table is laid out anew with its rows.
CREATE TABLE crypto_audit_next (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    at           TEXT    NOT NULL,
    operation    TEXT    NOT NULL
                 CHECK (operation IN ('encrypt', 'decrypt', 'provision', 'wrap', 'rewrap', 'shred', 'denied',
                                      'rotate', 'retire')),
    subject      TEXT,
    field_paths  TEXT    NOT NULL DEFAULT '[]',
    dek_version  INTEGER,
    kek_version  INTEGER,
    event_id     TEXT,
    actor        TEXT    NOT NULL,
    outcome      TEXT    NOT NULL CHECK (outcome IN ('ok', 'failed')),
    error_class  TEXT,
    count        INTEGER NOT NULL DEFAULT 1 CHECK (count > 0)
);

INSERT INTO crypto_audit_next
    (id, at, operation, subject, field_paths, dek_version, kek_version, event_id, actor, outcome, error_class, count)
SELECT id, at, operation, subject, field_paths, dek_version, kek_version, event_id, actor, outcome, error_class, count
FROM crypto_audit;

DROP TABLE crypto_audit;
ALTER TABLE crypto_audit_next RENAME TO crypto_audit;
CREATE INDEX IF NOT EXISTS crypto_audit_by_subject ON crypto_audit (subject, id);
