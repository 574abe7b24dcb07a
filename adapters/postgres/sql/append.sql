-- One append in one statement: the expected-version check, the idempotency key (with the
-- request's fingerprint) and the events. A key already stored inserts nothing, and then
-- no event either (`keyed` is 0): the caller reads the stored key and decides. Audit
-- rows of sealed fields, when there are any, are spliced in after `ins`, guarded by it.
WITH cur AS (
    SELECT coalesce(max(version), 0) AS v FROM events WHERE aggregate_id = $1
), ok AS (
    SELECT v FROM cur WHERE $3::bigint IS NULL OR v = $3
), key AS (
    INSERT INTO idempotency_keys (key, aggregate_id, first_version, last_version, fingerprint)
    SELECT $4, $1, ok.v + 1, ok.v + $5, $12 FROM ok WHERE $4::text IS NOT NULL
    ON CONFLICT (key) DO NOTHING
    RETURNING key
), ins AS (
    INSERT INTO events (event_id, aggregate_id, aggregate_type, event_type, event_data, metadata,
                        version, timestamp, encrypted_fields)
    SELECT coalesce(e.event_id, gen_random_uuid()), $1, $2, e.event_type, e.event_data, e.metadata,
           ok.v + e.n, coalesce(e.ts, now()), ARRAY(SELECT jsonb_array_elements_text(e.enc))
    FROM ok, unnest($6::uuid[], $7::text[], $8::jsonb[], $9::jsonb[], $10::timestamptz[], $11::jsonb[])
             WITH ORDINALITY AS e(event_id, event_type, event_data, metadata, ts, enc, n)
    WHERE $4::text IS NULL OR EXISTS (SELECT 1 FROM key)
    RETURNING event_id, position, version
)
-- audit rows
SELECT (SELECT v FROM cur) AS current,
       (SELECT count(*) FROM key) AS keyed,
       coalesce((SELECT array_agg(event_id ORDER BY version) FROM ins), '{}') AS ids,
       coalesce((SELECT array_agg(position ORDER BY version) FROM ins), '{}') AS positions,
       coalesce((SELECT min(version) FROM ins), 0) AS first_version
