"""Helpers shared by the test modules: local HTTP servers, records, the adapter fuzz kit."""
