-- The partition rows take the name the PostgreSQL store gives them, so both stores have
-- the same tables. Nothing refers to the table by a foreign key; its columns, key and
-- rows stay as they are.
ALTER TABLE projection_checkpoints RENAME TO projection_state;
