-- Keeps one snapshot (?1 projection, ?2 row key, ?3 version, ?4 aggregate, ?5 at,
-- ?6 handler version, ?7 upcasters, ?8 row), replacing one of the same row and version.
INSERT INTO snapshots (projection, row_key, version, aggregate_id, at, handler_version, upcasters, row)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
ON CONFLICT (projection, row_key, version) DO UPDATE
    SET aggregate_id = excluded.aggregate_id, at = excluded.at, handler_version = excluded.handler_version,
        upcasters = excluded.upcasters, row = excluded.row
