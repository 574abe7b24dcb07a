-- ?1 projection: every partition row, before the rows of a new partition count go in.
DELETE FROM projection_state WHERE projection = ?1
