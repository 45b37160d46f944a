"""Settings (``config.settings``) and the Celery application (``config.celery``)."""
