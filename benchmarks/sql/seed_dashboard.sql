-- Seeds gd_instances for the dashboard benchmark, without the library: plain
-- INSERT ... SELECT generate_series, run with search_path set to the gen_durable schema.
-- :rows is the row count.
--
-- Five classes (bench.A to bench.E) over three queues. Of every 100 rows: 90 done, 2 failed
-- and 1 cancelled, finished over the last week (what GC's default retention of a week
-- keeps: about 0.6 % of them in the last hour); 3 runnable, 2 scheduled for later and 2
-- awaiting a signal. 50 rows of bench.A are running. Ids grow with creation time.

INSERT INTO gd_instances (
    fsm, queue, priority, status, step, state, version, attempt, max_attempts,
    run_at, correlation_key, result, error, created_at, updated_at, finished_at
)
SELECT
    'bench.' || chr(65 + ((g / 100) % 5)),
    (ARRAY['default', 'mail', 'billing'])[1 + (g % 3)],
    0,
    s.status,
    CASE WHEN s.status IN ('done', 'failed', 'cancelled') THEN 'finish' ELSE 'wait' END,
    jsonb_build_object('n', g),
    2, 1, 5,
    CASE WHEN s.status = 'scheduled' THEN now() + interval '1 hour'
         WHEN s.status = 'available' THEN now() - interval '1 minute' END,
    'seed-' || g,
    CASE WHEN s.status = 'done' THEN 'null'::jsonb END,
    CASE WHEN s.status = 'failed'
         THEN jsonb_build_object('type', 'RuntimeError', 'message', 'seeded') END,
    t.at - interval '2 seconds',
    t.at,
    CASE WHEN s.status IN ('done', 'failed', 'cancelled') THEN t.at END
FROM generate_series(1, :rows) AS g,
LATERAL (SELECT now() - (:rows - g) * (interval '7 days' / :rows) AS at) AS t,
LATERAL (
    SELECT CASE
        WHEN g % 100 < 90 THEN 'done'
        WHEN g % 100 < 92 THEN 'failed'
        WHEN g % 100 < 93 THEN 'cancelled'
        WHEN g % 100 < 96 THEN 'available'
        WHEN g % 100 < 98 THEN 'scheduled'
        ELSE 'awaiting'
    END AS status
) AS s;

UPDATE gd_instances
SET status = 'running', lease_owner = 'bench', lease_expires_at = now() + interval '1 hour'
WHERE id IN (
    SELECT id FROM gd_instances WHERE status = 'available' AND fsm = 'bench.A' LIMIT 50
);
