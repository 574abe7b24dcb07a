-- Drops every snapshot of projection ?1 (its rows are being rebuilt).
DELETE FROM snapshots WHERE projection = ?1
