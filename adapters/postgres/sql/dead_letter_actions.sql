SELECT dead_letter_id, actor, action, at, outcome FROM dead_letter_actions
WHERE dead_letter_id = $1 ORDER BY id
