"""Webhooks: the store's events POSTed, signed, in order, to ``NEWSQ_WEBHOOK_URL``.

``config.py`` the settings it takes and its headers; ``deliver.py`` the sender (one at
a time per deployment, resuming at its cursor); ``lease.py`` the Redis lease that picks
the one; ``service.py`` a worker's deliverer, started and stopped with the worker.
"""

from newsq.webhooks.config import EVENT_ID_HEADER, SIGNATURE_HEADER, WebhookConfig
from newsq.webhooks.deliver import Deliverer, check_target, drain, sign

__all__ = [
    "EVENT_ID_HEADER",
    "SIGNATURE_HEADER",
    "Deliverer",
    "WebhookConfig",
    "check_target",
    "drain",
    "sign",
]
