-- Why a claim took no lease: the projection's partition count (NULL: not registered) and
-- whether the partition's row exists. A row that exists with that count is leased to
-- another owner.
SELECT (SELECT max(s.partitions) FROM projection_state s WHERE s.projection = p.name),
       EXISTS (SELECT 1 FROM projection_state s WHERE s.projection = p.name AND s.partition = $2)
FROM projections p
WHERE p.name = $1
