-- ?1 dead letter, ?2 actor, ?3 action, ?4 when, ?5 outcome.
INSERT INTO dead_letter_actions (dead_letter_id, actor, action, at, outcome) VALUES (?1, ?2, ?3, ?4, ?5)
