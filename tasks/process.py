"""The process task: clean, dedup and store one fetched URL."""

from __future__ import annotations

from celery import Task

from newsq.config.celery import PROCESS_QUEUE, PROCESS_TASK, app
from newsq.feeds.send import send_fetches
from newsq.pipeline import process_step
from newsq.tasks.context import countdown, lane_of, runtime, transient_errors


@app.task(name=PROCESS_TASK, bind=True, max_retries=None)
def process(self: Task, url: str) -> str | None:
    retry = lambda delay: self.retry(countdown=delay)  # noqa: E731
    rt = runtime()
    with transient_errors(url, retry, self.request.retries):
        step = rt.on_cpu(process_step, rt, url)  # the CPU lane of a threaded worker
    if step.action == "retry":  # the fetched body was lost: fetch again
        send_fetches(app, [url], lane=lane_of(self))
    elif step.action == "next":  # the page waits for more of its site's (boilerplate)
        app.send_task(PROCESS_TASK, args=(url,), queue=PROCESS_QUEUE, priority=lane_of(self),
                      countdown=countdown(step.countdown))  # fmt: skip
    return step.state
