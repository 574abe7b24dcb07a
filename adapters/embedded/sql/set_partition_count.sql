-- ?1 projection, ?2 its new partition count (`projector scale`).
UPDATE projections SET partitions = ?2 WHERE name = ?1
