-- Serializes key provisioning and shredding of one subject for the rest of the
-- transaction, so a concurrent provision cannot slip a key past a shred. $1 subject.
SELECT pg_advisory_xact_lock(hashtextextended('projector.subject:' || $1, 0))
