-- Readers do not block the writer, and several processes can share the file. Returns the
-- journal mode now in force, which stays the old one where the file system cannot do WAL.
PRAGMA journal_mode = WAL
