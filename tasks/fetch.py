"""The fetch task: one URL from the ``fetch`` queue to the ``process`` queue.

A worker that consumes both queues processes the page at once, in the same task and
in memory: no second task, no page body through Redis (the benchmark's fastest
layout, see ``bench/README.md``). A fetch-only worker hands the page off.
"""

from __future__ import annotations

from celery import Task

from config.celery import PROCESS_QUEUE, app
from newsq.pipeline import fetch_step, process_step
from tasks.runtime import countdown, runtime, transient_errors


@app.task(name="newsq.fetch", bind=True, max_retries=None)
def fetch(self: Task, url: str, attempt: int = 0) -> str | None:
    retry = lambda delay: self.retry(countdown=delay)  # noqa: E731
    inline = PROCESS_QUEUE in self.app.amqp.queues.consume_from
    rt = runtime()
    with transient_errors(url, retry, self.request.retries):
        step = fetch_step(rt, url, attempt, hand_off=not inline)
        if step.page is not None:  # on the process's CPU lane (newsq/admission.py)
            step = rt.on_cpu(process_step, rt, url, step.page, attempt)
    if step.action == "next":
        from tasks.process import process

        process.delay(url)
    elif step.action == "retry":
        fetch.apply_async((url, attempt + 1), countdown=countdown(step.countdown))
    elif step.action == "wait":  # throttled: does not spend a retry
        fetch.apply_async((url, attempt), countdown=countdown(step.countdown))
    return step.state
