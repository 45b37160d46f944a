"""The deliverer of a worker process: started when the worker is ready, stopped when it
shuts down (``newsq.workers.worker`` connects these to Celery's signals)."""

from __future__ import annotations

import logging

import redis

from newsq.config.settings import Settings
from newsq.connections import state_redis
from newsq.errors import NewsqError
from newsq.store.database import Store
from newsq.webhooks.config import WebhookConfig
from newsq.webhooks.deliver import Deliverer, check_target

log = logging.getLogger(__name__)


def lease_client(settings: Settings) -> redis.Redis:
    """A client of the Redis the lease lives in: the shared state's (a short timeout: a
    holder that cannot renew stops sending)."""
    return state_redis(settings, socket_timeout=5.0)


class Service:
    """This process's deliverer, when ``NEWSQ_WEBHOOK_URL`` is set."""

    def __init__(self) -> None:
        self.deliverer: Deliverer | None = None

    def start(self, settings: Settings) -> None:
        config = WebhookConfig.from_settings(settings)
        if config is None or self.deliverer is not None:
            return
        try:
            check_target(config)  # `newsq worker` refused it at start already
            store = Store.from_url(settings.database_url)
        except NewsqError as exc:
            log.error("%s; no webhook delivery from this worker", exc)
            return
        self.deliverer = Deliverer(config, store, lease_client(settings)).start()

    def stop(self) -> None:
        deliverer, self.deliverer = self.deliverer, None
        if deliverer is not None:
            deliverer.stop()
            deliverer.store.close()
            deliverer.lease.client.close()


service = Service()
"""The one of this process."""
