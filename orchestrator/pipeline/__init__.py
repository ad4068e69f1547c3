"""Ingestion and retrieval stages: pure functions, clients passed in."""
