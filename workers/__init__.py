"""Celery workers: the only code that touches the vector store."""
