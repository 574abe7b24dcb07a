-- The partition of an aggregate, written once: the last four bytes of the UUID as a
-- big-endian unsigned integer, modulo the partition count; 0 when the count is 1 or less
-- (`Partition::bucket` in the core). A single-expression SQL function, IMMUTABLE and
-- PARALLEL SAFE, so the planner inlines it: a statement calling it plans exactly as if it
-- spelled the expression out, and with a constant count of 1 the filter folds away.
CREATE OR REPLACE FUNCTION projector_bucket(aggregate_id uuid, partitions bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN partitions <= 1 THEN 0::bigint
                ELSE ('x' || right(aggregate_id::text, 8))::bit(32)::bigint % partitions END
$$;
