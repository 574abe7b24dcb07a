-- `write_snapshots.sql` inside a batch commit (spliced in as a CTE, its parameters
-- renumbered): writes only when CTE `guard` returned its row.
INSERT INTO snapshots (projection, row_key, version, aggregate_id, at, handler_version, upcasters, row)
SELECT s.*
FROM guard
CROSS JOIN unnest($1::text[], $2::text[], $3::bigint[], $4::uuid[], $5::timestamptz[], $6::int[], $7::text[],
                  $8::text[]) AS s
ON CONFLICT (projection, row_key, version) DO UPDATE
    SET aggregate_id = EXCLUDED.aggregate_id, at = EXCLUDED.at, handler_version = EXCLUDED.handler_version,
        upcasters = EXCLUDED.upcasters, row = EXCLUDED.row
RETURNING 1
