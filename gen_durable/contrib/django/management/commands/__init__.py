"""The management commands: each forwards to the ``gen-durable`` command line."""
