INSERT INTO dead_letter_actions (dead_letter_id, actor, action, outcome) VALUES ($1, $2, $3, $4)
