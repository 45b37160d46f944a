"""The Celery app, for ``celery -A newsq worker`` (and ``beat``, ``inspect``, Flower).

Importing this module connects newsq's worker start-up to Celery's signals
(:mod:`newsq.workers.worker`), so a worker started by Celery's own command line runs
exactly what ``newsq worker`` runs.
"""

from newsq.config.celery import app
from newsq.workers import worker as _startup  # noqa: F401  (connects the start-up signals)

__all__ = ["app"]
