"""The messages a worker held when its broker connection died, given back at once.

kombu's Redis transport keeps each delivered message in the broker's ``unacked`` hash
until it is acked, and puts it back on its queue when the channel closes. When the
broker's master dies outright (a Sentinel failover after a crash, not ``SENTINEL
FAILOVER``), that close runs while the Sentinels still name the dead master: the put
back fails, and the messages (replicated to the new master) wait out
``NEWSQ_VISIBILITY_TIMEOUT``, an hour by default, while the worker carries on. This
consumer step remembers the channel the consumer had and, once it has connected again,
gives that channel's unacked messages back through the new one.

A message whose task is still running here runs again elsewhere; the ledger lets only
one delivery take a URL's step (``Ledger.begin``), as for any redelivery.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps

log = logging.getLogger(__name__)


class GiveBackOnReconnect(bootsteps.StartStopStep):
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.channel: Any = None

    def start(self, c: Any) -> None:
        consumer = getattr(c, "task_consumer", None)
        if consumer is None:
            return
        old, self.channel = self.channel, consumer.channel
        if old is None or old is self.channel:
            return
        held = _held(old)
        restore_by_tag = getattr(self.channel.qos, "restore_by_tag", None)
        if not held or restore_by_tag is None:  # not Redis with acks emulated
            return
        for tag in held:  # a tag restored or acked meanwhile is no longer there: a no-op
            restore_by_tag(tag)
        log.warning("gave back %d messages held when the broker connection was lost", len(held))


def _held(channel: Any) -> list[str]:
    """The delivery tags the closed channel had taken and not acked."""
    qos = getattr(channel, "_qos", None)
    if qos is None:
        return []
    acked = set(getattr(qos, "_dirty", ()))
    return [tag for tag in list(getattr(qos, "_delivered", {})) if tag not in acked]
