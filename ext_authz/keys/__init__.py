"""Verification keys: parsing key sets, fetching them, and serving snapshots."""
