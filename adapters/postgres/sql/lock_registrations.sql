-- Held until the registration's transaction ends: `CREATE TABLE IF NOT EXISTS` is not
-- safe against itself, and two runners may start at once.
SELECT pg_advisory_xact_lock(7215666)
