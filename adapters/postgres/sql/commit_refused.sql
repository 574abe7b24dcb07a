-- Why a batch commit's compare-and-set matched nothing: the registered table and
-- partition count (no row: not registered), whether the partition's row exists, and its
-- lease owner.
SELECT p.table_name,
       (SELECT max(c.partitions) FROM projection_state c WHERE c.projection = p.name),
       s.partition IS NOT NULL,
       s.lease_owner
FROM projections p
LEFT JOIN projection_state s ON s.projection = p.name AND s.partition = $2
WHERE p.name = $1
