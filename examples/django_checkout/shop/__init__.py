"""The shop's app: orders and their checkout flows."""
