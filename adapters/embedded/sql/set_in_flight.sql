-- Records the batch the lease holder ?3 is about to apply (?4 / ?5 its end, ?6 its event
-- count; all null: none) and the consecutive crashes ?7, and renews the lease until ?8.
-- ?1 projection, ?2 partition.
UPDATE projection_state
SET in_flight_transaction_id = ?4, in_flight_position = ?5, in_flight_events = ?6, crashes = ?7,
    lease_expires_at = ?8
WHERE projection = ?1 AND partition = ?2 AND lease_owner = ?3
