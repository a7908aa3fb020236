"""Maintenance services: each one small loop with a ``run_once``; none imports another."""
