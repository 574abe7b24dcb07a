-- Every partition of every projection, with the filter its lag is measured by.
SELECT s.projection, s.partition, s.partitions, s.transaction_id, s.position, s.lease_owner,
       s.lease_expires_at, s.status, s.events_applied, s.error_count, s.last_error, s.last_event_at,
       s.updated_at, p.filter
FROM projection_state s
LEFT JOIN projections p ON p.name = s.projection
ORDER BY s.projection, s.partition
