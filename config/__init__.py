"""Settings (``newsq.config.settings``) and the Celery application (``newsq.config.celery``)."""
