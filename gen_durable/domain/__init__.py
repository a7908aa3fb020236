"""The pure domain (L1): definitions, the registry, insert specs, outcomes, the decision,
retries, rate-limit math, cron schedules and the one converter. Imports L0 (errors, types,
clock) and attrs, cattrs and cronsim only: never the database, the client or the runtime."""
