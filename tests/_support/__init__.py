"""Shared test support: PostgreSQL servers, waits and counts, SQL watchers, shared classes."""
