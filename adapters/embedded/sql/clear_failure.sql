-- ?1 projection, ?2 event: forgets its failed attempts.
DELETE FROM event_failures WHERE projection = ?1 AND event_id = ?2
