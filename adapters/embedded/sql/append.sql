-- One event, at the version the append computed. The unique (aggregate_id, version)
-- refuses a version another writer took; `position` is assigned inside the write lock,
-- so position order is commit order.
INSERT INTO events (transaction_id, event_id, aggregate_id, aggregate_type, event_type, event_data, metadata,
                    version, timestamp, encrypted_fields)
VALUES (0, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
RETURNING position
