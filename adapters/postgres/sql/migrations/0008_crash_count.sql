-- The batch a runner recorded before applying it (a commit clears it) and the
-- partition's consecutive crashes: a claim that finds a batch still in flight knows that
-- its runner died applying it.
ALTER TABLE projection_state ADD COLUMN IF NOT EXISTS in_flight_transaction_id xid8;
ALTER TABLE projection_state ADD COLUMN IF NOT EXISTS in_flight_position bigint;
ALTER TABLE projection_state ADD COLUMN IF NOT EXISTS in_flight_events integer;
ALTER TABLE projection_state ADD COLUMN IF NOT EXISTS crashes integer NOT NULL DEFAULT 0;
