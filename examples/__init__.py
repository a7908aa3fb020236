"""Runnable examples of gen_durable."""
