-- Every partition at the rebuild's checkpoint; partition $5[i] counts $6[i] more applied
-- events (`rules::rebuild_applied_share`). The parking epoch moves: the rebuild may have
-- parked aggregates.
UPDATE projection_state s
SET transaction_id = $2, position = $3, last_event_at = $4, events_applied = s.events_applied + u.share,
    status = 'running', updated_at = now(), parking_epoch = s.parking_epoch + 1
FROM unnest($5::int[], $6::bigint[]) AS u(partition, share)
WHERE s.projection = $1 AND s.partition = u.partition
