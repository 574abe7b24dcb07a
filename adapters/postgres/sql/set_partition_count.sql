-- $1 projection, $2 its new partition count (`projector scale`); returns nothing when the
-- projection is not registered.
UPDATE projections SET partitions = $2, updated_at = now() WHERE name = $1 RETURNING 1
