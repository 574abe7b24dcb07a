-- What an idempotency key was stored with: aggregate, fingerprint and the first outcome.
SELECT i.aggregate_id, i.fingerprint, i.first_version, i.last_version,
       coalesce(array_agg(e.event_id ORDER BY e.version) FILTER (WHERE e.event_id IS NOT NULL), '{}'),
       coalesce(array_agg(e.position ORDER BY e.version) FILTER (WHERE e.event_id IS NOT NULL), '{}')
FROM idempotency_keys i
LEFT JOIN events e ON e.aggregate_id = i.aggregate_id AND e.version BETWEEN i.first_version AND i.last_version
WHERE i.key = $1
GROUP BY i.aggregate_id, i.fingerprint, i.first_version, i.last_version
