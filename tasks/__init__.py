"""Thin Celery tasks, one module per stage; the logic lives in ``newsq.pipeline``."""
