"""The feed tasks: beat's tick finds due feeds; each is polled as a task of its own.

``newsq.poll_feeds`` (sent by Celery beat every ``NEWSQ_FEED_TICK`` seconds) claims the
due feeds and sends one ``newsq.feed`` per feed, so many feeds are polled side by side
on the fetch queue's threads; a poll's new URLs go in the fresh lane (unless there
are over ``FRESH_MOST``: ``newsq.feeds.send``). A lost ``newsq.feed`` task costs only
a delay: the claim is a lease, and the feed is due again when it runs out.
"""

from __future__ import annotations

import logging
from datetime import datetime

import redis

from newsq.config.celery import FEED_TASK, POLL_FEEDS_TASK, app
from newsq.errors import StoreUnavailable
from newsq.feeds.poll import claim_due, poll_feed
from newsq.feeds.send import send_fetches
from newsq.tasks.context import runtime

log = logging.getLogger(__name__)


@app.task(name=POLL_FEEDS_TASK)
def poll_feeds() -> int:
    rt = runtime()
    try:
        claimed = claim_due(rt.store, rt.settings)
    except StoreUnavailable as exc:
        log.warning("due feeds not read: %s", exc)
        return 0
    for url, due in claimed.items():
        poll_feed_task.delay(url, due.isoformat())
    return len(claimed)


@app.task(name=FEED_TASK)
def poll_feed_task(url: str, due: str | None = None) -> int:
    rt = runtime()
    new: list[str] = []
    try:
        poll = poll_feed(rt.store, rt.fetcher, rt.ledger, url, send=new.extend,
                         polite=rt.politeness,
                         due=datetime.fromisoformat(due) if due else None)  # fmt: skip
    except (StoreUnavailable, redis.RedisError) as exc:
        log.warning("feed %s not polled: %s; due again when its lease ends", url, exc)
        return 0
    finally:  # queued in the ledger: sent even when the poll's last update failed
        send_fetches(app, new, rt.settings.fetch_batch)  # fresh, unless a backlog
    return poll.new if poll else 0
