-- Takes this session's shared lock on the owner id, held until the session ends: while it
-- is held, a probe (an exclusive try) fails and the owner counts as alive. Shared, because
-- every connection of one runner holds it; waits only for a probe's brief exclusive hold.
SELECT pg_advisory_lock_shared(hashtextextended($1, $2))
