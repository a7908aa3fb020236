"""``manage.py gen_durable_migrate`` and ``manage.py gen_durable_run``."""
