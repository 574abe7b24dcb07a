-- Whether the lease's owner holds its session lock (an advisory lock keyed by its owner
-- id, held for as long as its database session lives). Only such a lease is taken over
-- at once when the lock turns out free; any other waits for `lease_expires_at`.
ALTER TABLE projection_state ADD COLUMN IF NOT EXISTS lease_locked boolean NOT NULL DEFAULT false;
