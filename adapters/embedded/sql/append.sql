-- One event, at the version the append computed. The unique (aggregate_id, version)
-- refuses a version another writer took; `position` is assigned inside the write lock,
-- so position order is commit order. ?10 `recorded_at` is the store's clock inside that lock.
INSERT INTO events (transaction_id, event_id, aggregate_id, aggregate_type, event_type, event_data, metadata,
                    version, timestamp, encrypted_fields, recorded_at)
VALUES (0, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
RETURNING position
