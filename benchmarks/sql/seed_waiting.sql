-- Seeds gd_instances with instances that wait, without the library: plain INSERT ...
-- SELECT generate_series, run with search_path set to the gen_durable schema.
-- :keyed rows are blocked on a concurrency key (limit 1) that a running instance holds
-- (its lease lasts an hour, so the reaper leaves it alone); :limited rows wait
-- for a rate-limit bucket (:bucket) that is in debt for an hour, as a RateLimited answer
-- leaves them.

INSERT INTO gd_instances (
    fsm, queue, priority, status, step, state, version, attempt, max_attempts,
    concurrency_key, concurrency_limit, created_at, updated_at
)
SELECT
    'bench.wait.Keyed', 'default', 0, 'blocked', 'perform',
    jsonb_build_object('n', g), 0, 0, 10,
    'bench-hot', 1, now(), now()
FROM generate_series(1, :keyed) AS g;

INSERT INTO gd_instances (
    fsm, queue, priority, status, step, state, version, attempt, max_attempts,
    concurrency_key, concurrency_limit, lease_token, lease_owner, lease_expires_at,
    created_at, updated_at
)
VALUES (
    'bench.wait.Keyed', 'default', 0, 'running', 'perform', '{}'::jsonb, 0, 1, 10,
    'bench-hot', 1, gen_random_uuid(), 'bench-holder', now() + interval '1 hour', now(), now()
);

INSERT INTO gd_rate_buckets (key, tokens, updated_at, debt_until)
VALUES (:bucket, 0, now(), now() + interval '1 hour')
ON CONFLICT (key) DO UPDATE
SET tokens = 0, updated_at = now(), debt_until = now() + interval '1 hour';

INSERT INTO gd_instances (
    fsm, queue, priority, status, step, state, version, attempt, max_attempts,
    rate_key, rate_weight, run_at, created_at, updated_at
)
SELECT
    'bench.wait.Limited', 'default', 0, 'scheduled', 'perform',
    jsonb_build_object('n', g), 0, 0, 10,
    :bucket, 1, now() + interval '1 hour', now(), now()
FROM generate_series(1, :limited) AS g;
