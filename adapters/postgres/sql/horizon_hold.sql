-- The oldest open transaction (other than ours) while committed events wait below it.
WITH waiting AS (
    SELECT count(*) AS n FROM events
    WHERE transaction_id >= pg_snapshot_xmin(pg_current_snapshot()))
SELECT a.pid,
       format('%s@%s, %s, %s: %s', a.usename, a.datname,
              coalesce(nullif(a.application_name, ''), 'no application name'),
              a.state, left(regexp_replace(a.query, '\s+', ' ', 'g'), 120)),
       a.xact_start, waiting.n
FROM waiting, pg_stat_activity a
WHERE waiting.n > 0 AND a.backend_xid IS NOT NULL AND a.pid <> pg_backend_pid()
ORDER BY age(a.backend_xid) DESC
LIMIT 1
