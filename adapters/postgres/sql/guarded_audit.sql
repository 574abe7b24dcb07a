-- Crypto audit rows given as arrays $1..$10 (spliced into a statement whose CTE `guard`
-- returns a row when the statement's effect is written, nothing to write nothing; the
-- parameters renumbered to their place in it).
INSERT INTO crypto_audit
    (operation, subject, field_paths, dek_version, kek_version, event_id, actor, outcome, error_class, count)
SELECT a.*
FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::integer[], $5::integer[], $6::uuid[], $7::text[],
            $8::text[], $9::text[], $10::bigint[]) AS a
WHERE EXISTS (SELECT 1 FROM guard)
