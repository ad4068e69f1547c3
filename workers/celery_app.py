"""The worker's Celery app (`celery -A workers.tasks worker`), built from the contract in
orchestrator/lanes.py; settings come from TRITONRAG_* env.

The embedded stack runs the `llm` lane in a worker of its own (it needs no vector store), so
its thread count bounds how many answers generate at once.
"""

from __future__ import annotations

from orchestrator.lanes import create_celery
from orchestrator.settings import Settings

settings = Settings()
app = create_celery(settings)
