-- Field encryption: each subject's data keys (stored only wrapped under a key-encryption
-- key), the erasure fence of shredded subjects, and the audit trail of every key and
-- field operation. No plaintext and no key material is ever stored here.
--
-- Timestamps RFC 3339 UTC text with microseconds; `field_paths` a JSON array.
CREATE TABLE IF NOT EXISTS subject_keys (
    subject       TEXT    NOT NULL,
    dek_version   INTEGER NOT NULL CHECK (dek_version > 0),
    kek_version   INTEGER NOT NULL CHECK (kek_version > 0),
    wrapped       TEXT    NOT NULL,
    created_at    TEXT    NOT NULL,
    rewrapped_at  TEXT,
    PRIMARY KEY (subject, dek_version)
);

CREATE TABLE IF NOT EXISTS erased_subjects (
    subject    TEXT PRIMARY KEY,
    erased_at  TEXT NOT NULL,
    actor      TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS crypto_audit (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    at           TEXT    NOT NULL,
    operation    TEXT    NOT NULL
                 CHECK (operation IN ('encrypt', 'decrypt', 'provision', 'wrap', 'rewrap', 'shred', 'denied')),
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

CREATE INDEX IF NOT EXISTS crypto_audit_by_subject ON crypto_audit (subject, id);
