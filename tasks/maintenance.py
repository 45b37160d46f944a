"""Housekeeping tasks sent by Celery beat.

``newsq.requeue_stuck`` (every 30 s, or half ``NEWSQ_STUCK_AFTER``
if shorter) re-enqueues URLs that made no progress for ``NEWSQ_STUCK_AFTER`` seconds
(default twice the visibility timeout): their message was lost, e.g. by a broker
restarted without persistence. It is the periodic form of ``newsq retry --stuck`` and
calls the same function. While a queue holds a backlog it does nothing: a URL waiting
behind thousands of others is slow, not lost, and sending it again would only grow the
backlog; so is a URL of a host whose frontier queue holds URLs waiting for its turn
(``newsq.fetch.frontier``), which is left out, while the other hosts' stuck URLs are
sent again. With the queues empty it also sends again at once the URLs no message
stands for (``newsq.recovery``: a broker's master killed before it replicated them).
"""

from __future__ import annotations

import logging

from newsq.config.celery import BULK, REQUEUE_STUCK_TASK, app
from newsq.feeds.send import send_fetches
from newsq.pipeline import requeue_stuck
from newsq.recovery import backlog
from newsq.tasks.context import runtime, send_lost
from newsq.urls import host_of

log = logging.getLogger(__name__)


@app.task(name=REQUEUE_STUCK_TASK)
def requeue_stuck_task() -> int:
    rt = runtime()
    if queued := backlog(rt.broker, rt.settings.key_prefix):
        log.info("stuck URLs not checked: %d messages still queued", queued)
        return 0
    # a parked URL does not touch the ledger while its host's queue drains: one of a
    # host with URLs waiting is slow, not lost (a frontier never empty must not stop
    # the recovery of every other host's lost messages)
    hosts = set(rt.frontier.waiting())
    urls: list[str] = []
    requeue_stuck(rt.ledger, rt.settings.stuck_threshold, urls.append,
                  waiting=lambda url: host_of(url) in hosts)  # fmt: skip
    send_fetches(app, urls, rt.settings.fetch_batch, lane=BULK)
    return len(urls) + len(send_lost(rt, None))
