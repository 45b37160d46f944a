"""The backfill task: the records of one span of a WARC file, clean → dedup → store.

It carries the file and the byte span, never the pages, so a big file is spread over
every worker. It is sent in the bulk lane of the process queue: live feed items go
first. A span delivered again after its worker died goes on where the counted records
end (``newsq.backfill.step``).
"""

from __future__ import annotations

from typing import Any

from celery import Task

from newsq.config.celery import BACKFILL_TASK, BULK, PROCESS_QUEUE, PROCESS_TASK, app
from newsq.tasks.context import countdown, runtime, transient_errors


@app.task(name=BACKFILL_TASK, bind=True, max_retries=None)
def backfill_range(self: Task, span: dict[str, Any]) -> int:
    retry = lambda delay: self.retry(countdown=delay)  # noqa: E731

    def hand_on(url: str, delay: float) -> None:  # a page put off: processed later
        app.send_task(PROCESS_TASK, args=(url,), queue=PROCESS_QUEUE,
                      countdown=countdown(delay), priority=BULK)  # fmt: skip

    # here, not at the top: warcio and the WARC reader are ~45 ms of every worker's start
    from newsq.backfill.progress import Span
    from newsq.backfill.step import span_step

    guard = lambda url: transient_errors(url, retry, self.request.retries)  # noqa: E731
    return span_step(runtime(), Span(**span), guard, hand_on)
