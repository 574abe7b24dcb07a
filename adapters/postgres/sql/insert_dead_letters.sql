-- Stores dead letters given as arrays $1..$10 (spliced into a statement whose CTE `guard`
-- returns the projection's name, or nothing to write nothing; the parameters renumbered
-- to their place in it). Failure times come from the attempt history. A letter already
-- stored for the projection and event is opened again and updated, not duplicated.
INSERT INTO dead_letters (projection, event_id, position, transaction_id, aggregate_id, aggregate_type,
                          event_type, version, error, error_class, attempts, first_failed_at, last_failed_at)
SELECT guard.projection, d.event_id, d.position, d.xid, d.aggregate_id, d.aggregate_type, d.event_type,
       d.version, d.error, d.class, d.attempts, coalesce(f.first_failed_at, now()), now()
FROM guard
CROSS JOIN unnest($1::uuid[], $2::bigint[], $3::xid8[], $4::uuid[], $5::text[], $6::text[], $7::bigint[],
                  $8::text[], $9::text[], $10::int[])
     AS d(event_id, position, xid, aggregate_id, aggregate_type, event_type, version, error, class, attempts)
LEFT JOIN event_failures f ON f.projection = guard.projection AND f.event_id = d.event_id
ON CONFLICT (projection, event_id) DO UPDATE
    SET status = 'open', error = EXCLUDED.error, attempts = EXCLUDED.attempts,
        last_failed_at = EXCLUDED.last_failed_at
RETURNING id, projection, aggregate_id, version
