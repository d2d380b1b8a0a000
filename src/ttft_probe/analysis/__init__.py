"""Turning stored runs into answers: the report, the go/no-go gate, and the A/B test."""
