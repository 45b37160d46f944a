"""Celery settings Flower needs to see newsq's workers and queues.

newsq prefixes every broker key (``global_keyprefix``, see ``config/celery.py``), so a
Flower started with only the broker URL would watch empty queues and hear no worker.
Mounted into the Flower container and loaded with ``celery --config=newsq_flower``.
Change the prefix if you set NEWSQ_KEY_PREFIX.
"""

broker_transport_options = {"global_keyprefix": "newsq:q:"}
