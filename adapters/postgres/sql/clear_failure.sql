DELETE FROM event_failures WHERE projection = $1 AND event_id = $2
