-- The batch a runner recorded before applying it (a commit clears it) and the
-- partition's consecutive crashes: a claim that finds a batch still in flight knows that
-- its runner died applying it.
ALTER TABLE projection_state ADD COLUMN in_flight_transaction_id INTEGER;
ALTER TABLE projection_state ADD COLUMN in_flight_position INTEGER;
ALTER TABLE projection_state ADD COLUMN in_flight_events INTEGER;
ALTER TABLE projection_state ADD COLUMN crashes INTEGER NOT NULL DEFAULT 0;
