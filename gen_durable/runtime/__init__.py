"""The runtime: claim, run and commit steps; keep leases alive; maintain the tables."""
