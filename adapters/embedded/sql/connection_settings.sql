-- Set on every connection: SQLite forgets both when the connection closes. Foreign keys
-- keep dead letters and parkings with their projection; a full sync makes a committed
-- batch survive a power loss.
PRAGMA foreign_keys = ON;
PRAGMA synchronous = FULL;
