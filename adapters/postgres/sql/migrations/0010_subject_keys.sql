-- Field encryption: each subject's data keys (stored only wrapped under a key-encryption
-- key), the erasure fence of shredded subjects, and the audit trail of every key and
-- field operation. No plaintext and no key material is ever stored here.
CREATE TABLE IF NOT EXISTS subject_keys (
    subject       text        NOT NULL,
    dek_version   integer     NOT NULL CHECK (dek_version > 0),
    kek_version   integer     NOT NULL CHECK (kek_version > 0),
    wrapped       text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    rewrapped_at  timestamptz,
    PRIMARY KEY (subject, dek_version)
);

CREATE TABLE IF NOT EXISTS erased_subjects (
    subject    text        PRIMARY KEY,
    erased_at  timestamptz NOT NULL DEFAULT now(),
    actor      text        NOT NULL
);

CREATE TABLE IF NOT EXISTS crypto_audit (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    operation    text        NOT NULL
                 CHECK (operation IN ('encrypt', 'decrypt', 'provision', 'wrap', 'rewrap', 'shred', 'denied')),
    subject      text,
    field_paths  jsonb       NOT NULL DEFAULT '[]',
    dek_version  integer,
    kek_version  integer,
    event_id     uuid,
    actor        text        NOT NULL,
    outcome      text        NOT NULL CHECK (outcome IN ('ok', 'failed')),
    error_class  text,
    count        bigint      NOT NULL DEFAULT 1 CHECK (count > 0)
);

CREATE INDEX IF NOT EXISTS crypto_audit_by_subject ON crypto_audit (subject, id);
