"""The fetch tasks: URLs from the ``fetch`` queue to the ``process`` queue.

A worker that consumes both queues processes the page at once, in the same task and
in memory: no second task, no page body through Redis (the benchmark's fastest
layout, see ``bench/README.md``). A fetch-only worker hands the page off.

``newsq.fetch`` takes one URL; ``newsq.fetch_many`` several (with ``NEWSQ_FETCH_BATCH``
above 1 the intake batches a surge, ``newsq.feeds.intake.batches``): each of them is handled
exactly as a ``newsq.fetch`` of its own, side by side, and one that must be retried
goes on as one. Only newsq's thread pool runs a batch itself; any
other pool, whose time limits hold per task, sends its URLs on as ``newsq.fetch``
tasks.

A URL whose host has no politeness slot free waits in the frontier
(``newsq.fetch.frontier``), and the task ends; the frontier's dispatcher sends it again,
with a slot, at its host's turn (``newsq.feeds.send.send_granted``). What a fetch sends
on for its URL (the process task, a retry, its place in the frontier) keeps the lane it
came in (``newsq.feeds.send``): a fresh URL stays ahead of the backlog at every step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import redis
from celery import Task

from newsq.config.celery import FETCH_MANY_TASK, FETCH_TASK, PROCESS_QUEUE, PROCESS_TASK, app
from newsq.pipeline import fetch_step, process_step
from newsq.tasks.context import countdown, lane_of, runtime, transient_errors
from newsq.urls import host_of


def _fetch_one(task: Task, url: str, attempt: int, retries: int,
               retry: Callable[[float], Exception], lane: int,
               lease: str | None = None, interval: float = 0.0,
               slot: float = 0.0) -> str | None:  # fmt: skip
    inline = PROCESS_QUEUE in task.app.amqp.queues.consume_from
    rt = runtime()
    if lease is not None and _redelivered(task):
        # delivered again (its worker died): the slot's time has passed; ask anew
        with transient_errors(url, retry, retries):
            rt.frontier.release(host_of(url), lease)
        lease = None
    with transient_errors(url, retry, retries):
        step = fetch_step(rt, url, attempt, hand_off=not inline, lane=lane, lease=lease,
                          interval=interval, slot=slot)  # fmt: skip
        if step.page is not None:  # on the pool's CPU lane (newsq.workers.admission)
            step = rt.on_cpu(process_step, rt, url, step.page, attempt)
    if step.action == "next":  # a countdown: the page waits for more of its site's
        app.send_task(PROCESS_TASK, args=(url,), queue=PROCESS_QUEUE, priority=lane,
                      countdown=countdown(step.countdown) if step.countdown else None)  # fmt: skip
    elif step.action == "retry":
        fetch.apply_async((url, attempt + 1), countdown=countdown(step.countdown), priority=lane)
    return step.state  # parked: the frontier's dispatcher sends it on at its host's turn


def _redelivered(task: Task) -> bool:
    return bool((task.request.delivery_info or {}).get("redelivered"))


@app.task(name=FETCH_TASK, bind=True, max_retries=None)
def fetch(self: Task, url: str, attempt: int = 0, lease: str | None = None,
          interval: float = 0.0, lane: int | None = None,
          slot: float = 0.0) -> str | None:  # fmt: skip
    """``lease``, ``interval``, ``lane``, ``slot``: the concurrency slot the frontier
    granted, its host's interval then, the lane the URL waited in, when its request may
    start (``newsq.fetch.frontier.Grant``); a retry goes without them, as the slot's
    time has passed."""
    lane = lane_of(self) if lane is None else lane
    retry = lambda delay: self.retry(args=(url, attempt), countdown=delay, priority=lane)  # noqa: E731
    return _fetch_one(self, url, attempt, self.request.retries, retry, lane, lease, interval,
                      slot)  # fmt: skip


class _Later(Exception):
    """A URL of a batch to be tried again later, as a ``newsq.fetch`` of its own."""

    def __init__(self, delay: float) -> None:
        super().__init__(f"again in {delay:.1f} s")
        self.delay = delay


Slot = tuple[int, str | None, float, int, float]
"""A granted URL's attempt, lease, its host's interval then, the lane it waited in and
its request's start (``newsq.fetch``'s arguments after the URL)."""


@app.task(name=FETCH_MANY_TASK, bind=True)
def fetch_many(self: Task, urls: list[str], slots: list[list[Any]] | None = None) -> int:
    """Each URL as ``newsq.fetch`` would; returns how many were handled here (0: sent on
    one by one, outside newsq's thread pool). ``slots``: the frontier's grant of each
    URL (``newsq.feeds.send.send_granted``), as ``newsq.fetch``'s arguments after it.

    In newsq's thread pool the URLs run side by side, each in a task's place in the
    pool (``AdaptiveExecutor.side_by_side``), so a batch takes as long as its slowest
    URL, not the sum of them. A redelivered batch (its worker died) skips the URLs
    already done: the ledger's begin says so; its slots' time has passed, so their
    leases go back and the URLs ask anew.
    """
    rt = runtime()
    lane = lane_of(self)  # here: the URLs run on other threads, without this request
    given: list[Slot] = [(0, None, 0.0, lane, 0.0)] * len(urls)
    if slots is not None:
        given = [(int(g[0]), g[1], float(g[2]), int(g[3]), float(g[4])) for g in slots]
    if slots is not None and _redelivered(self):
        for url, (_, lease, _, _, _) in zip(urls, given, strict=True):
            if lease is not None:  # Redis away: the lease expires by itself
                with contextlib.suppress(redis.RedisError):
                    rt.frontier.release(host_of(url), lease)
        given = [(attempt, None, 0.0, lane_, 0.0) for attempt, _, _, lane_, _ in given]
    side_by_side = rt.pool.side_by_side
    if side_by_side is None:  # not newsq's thread pool: a pool with per-task time
        for url, slot in zip(urls, given, strict=True):
            # limits (prefork) must apply them to each URL: each goes on as its own task
            fetch.apply_async((url, *slot), priority=lane)
        return 0

    def one(item: tuple[str, Slot]) -> None:
        url, (attempt, lease, interval, lane_, slot) = item
        try:
            _fetch_one(self, url, attempt, 0, _Later, lane_, lease, interval, slot)
        except _Later as later:
            fetch.apply_async((url, attempt), countdown=later.delay, retries=1, priority=lane_)

    side_by_side(one, list(zip(urls, given, strict=True)))
    return len(urls)
