-- Seeds gd_instances with finished and far-future scheduled rows, without the library:
-- plain INSERT ... SELECT generate_series, run with search_path set to the gen_durable
-- schema. :done and :scheduled are the row counts.
--
-- Finished rows finished within the last day (so GC, with its default retention of a week,
-- leaves them alone); scheduled rows fall due 30 days from now or later. Each has a
-- correlation key, like instances started by an application's webhooks.

INSERT INTO gd_instances (
    fsm, queue, priority, status, step, state, version, attempt, max_attempts,
    correlation_key, result, created_at, updated_at, finished_at
)
SELECT
    'bench.seed.Finished', 'default', 0, 'done', 'perform',
    jsonb_build_object('n', g), 1, 0, 10,
    'seed-done-' || g, 'null'::jsonb,
    now() - interval '1 day', now() - (g % 86400) * interval '1 second',
    now() - (g % 86400) * interval '1 second'
FROM generate_series(1, :done) AS g;

INSERT INTO gd_instances (
    fsm, queue, priority, status, step, state, version, attempt, max_attempts,
    run_at, correlation_key, created_at, updated_at
)
SELECT
    'bench.seed.Future', 'default', 0, 'scheduled', 'perform',
    jsonb_build_object('n', g), 0, 0, 10,
    now() + interval '30 days' + g * interval '1 second',
    'seed-future-' || g, now(), now()
FROM generate_series(1, :scheduled) AS g;
