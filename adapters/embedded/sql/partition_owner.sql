-- ?1 projection, ?2 partition: who holds the lease (null: nobody); no row when the
-- partition does not exist.
SELECT lease_owner FROM projection_state WHERE projection = ?1 AND partition = ?2
