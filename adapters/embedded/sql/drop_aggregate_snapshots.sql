-- Drops every snapshot of aggregate ?1, in every projection (its events were rewritten).
DELETE FROM snapshots WHERE aggregate_id = ?1
