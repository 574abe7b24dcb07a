-- Audit rows, one per array element.
INSERT INTO crypto_audit
    (operation, subject, field_paths, dek_version, kek_version, event_id, actor, outcome, error_class, count)
SELECT *
FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::integer[], $5::integer[], $6::uuid[], $7::text[],
            $8::text[], $9::text[], $10::bigint[])
