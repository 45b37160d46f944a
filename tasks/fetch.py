"""The fetch task: one URL from the ``fetch`` queue to the ``process`` queue."""

from __future__ import annotations

from celery import Task

from config.celery import app
from newsq.pipeline import fetch_step
from tasks.runtime import countdown, runtime, transient_errors


@app.task(name="newsq.fetch", bind=True, max_retries=None)
def fetch(self: Task, url: str, attempt: int = 0) -> str | None:
    retry = lambda delay: self.retry(countdown=delay)  # noqa: E731
    with transient_errors(url, retry, self.request.retries):
        step = fetch_step(runtime(), url, attempt)
    if step.action == "next":
        from tasks.process import process

        process.delay(url)
    elif step.action == "retry":
        fetch.apply_async((url, attempt + 1), countdown=countdown(step.countdown))
    elif step.action == "wait":  # throttled: does not spend a retry
        fetch.apply_async((url, attempt), countdown=countdown(step.countdown))
    return step.state
