"""Shared test helpers: transcripts, records, local servers."""
