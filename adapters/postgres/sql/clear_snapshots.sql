-- Drops the snapshots of projection $1: of the rows keyed $2, or of all its rows when $2
-- is NULL (the rows are being rebuilt).
DELETE FROM snapshots WHERE projection = $1 AND ($2::text[] IS NULL OR row_key = ANY($2))
