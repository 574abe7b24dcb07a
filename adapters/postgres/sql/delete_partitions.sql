DELETE FROM projection_state WHERE projection = $1
