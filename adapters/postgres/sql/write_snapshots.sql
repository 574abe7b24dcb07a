-- Keeps snapshots given as arrays ($1 projections, $2 row keys, $3 versions,
-- $4 aggregates, $5 instants, $6 handler versions, $7 upcasters, $8 rows), replacing
-- one of the same row and version.
INSERT INTO snapshots (projection, row_key, version, aggregate_id, at, handler_version, upcasters, row)
SELECT *
FROM unnest($1::text[], $2::text[], $3::bigint[], $4::uuid[], $5::timestamptz[], $6::int[], $7::text[], $8::text[])
ON CONFLICT (projection, row_key, version) DO UPDATE
    SET aggregate_id = EXCLUDED.aggregate_id, at = EXCLUDED.at, handler_version = EXCLUDED.handler_version,
        upcasters = EXCLUDED.upcasters, row = EXCLUDED.row
