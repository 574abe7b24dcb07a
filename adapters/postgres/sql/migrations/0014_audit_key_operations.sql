-- The keyring's own changes join the crypto audit trail: `rotate` (a new primary
-- key-encryption key) and `retire` (a raised minimum version).
ALTER TABLE crypto_audit DROP CONSTRAINT IF EXISTS crypto_audit_operation_check;
ALTER TABLE crypto_audit ADD CONSTRAINT crypto_audit_operation_check
    CHECK (operation IN ('encrypt', 'decrypt', 'provision', 'wrap', 'rewrap', 'shred', 'denied', 'rotate', 'retire'));
