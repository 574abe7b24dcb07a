-- Records that the events $2 (aggregates $3, versions $4) are out of projection $1, by
-- the repairs of dead letters $5 with decisions $6. The first decision on an event stands.
INSERT INTO discarded_events (projection, event_id, aggregate_id, version, dead_letter_id, decision)
SELECT $1, d.event_id, d.aggregate_id, d.version, d.letter, d.decision
FROM unnest($2::uuid[], $3::uuid[], $4::bigint[], $5::bigint[], $6::text[])
     AS d(event_id, aggregate_id, version, letter, decision)
ON CONFLICT (projection, event_id) DO NOTHING
