-- Held until the migration's transaction ends, so two `init`s never apply one file twice.
SELECT pg_advisory_xact_lock(7215665)
