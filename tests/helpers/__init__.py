"""Helpers shared by the test modules: transcripts, records, local HTTP servers, the adapter fuzz kit."""
