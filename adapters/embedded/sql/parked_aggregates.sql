-- ?1 projection: every parked aggregate, from which version, behind which letter.
SELECT aggregate_id, from_version, dead_letter_id
FROM parked_aggregates
WHERE projection = ?1
ORDER BY aggregate_id
