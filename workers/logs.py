"""Logging set-up, done once where a process starts (CLI or worker).

One line per event. Inside a Celery task every line also carries the task's id and
name and the URL the task is about (its first argument), added by
:class:`TaskContext` from Celery's current request, so ``grep <task id>`` or
``grep <url>`` follows one URL through fetch and process. ``NEWSQ_LOG_FORMAT=json``
gives one JSON object per line with the same fields.
"""

from __future__ import annotations

import json
import logging
import sys
import time

NOISY = ("httpx", "httpcore", "trafilatura", "htmldate", "courlan", "charset_normalizer",
         "alembic")  # fmt: skip
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(task_tag)s: %(message)s"


class TaskContext(logging.Filter):
    """Adds ``task_id``, ``task_name`` and ``url`` from the running Celery task, if any.

    Celery's task stack is thread-local, so this is right on a thread pool too. In a
    process that never imported Celery it adds empty fields and imports nothing.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        task_id = task_name = url = None
        state = sys.modules.get("celery._state")
        task = state.get_current_task() if state is not None else None
        request = getattr(task, "request", None) if task is not None else None
        if request is not None and getattr(request, "id", None):
            task_id, task_name = request.id, task.name  # type: ignore[union-attr]
            args = getattr(request, "args", None) or ()
            if args and isinstance(args[0], str):
                url = args[0]
        record.task_id, record.task_name, record.url = task_id, task_name, url
        record.task_tag = f" [{task_id}]" if task_id else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and task fields if any."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in ("task_id", "task_name", "url"):
            value = getattr(record, name, None)
            if value:
                out[name] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup_logging(level: str = "WARNING", fmt: str = "text") -> None:
    """Send every logger's records to stderr, one line each, in ``fmt`` (text or json)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(TaskContext())  # on the handler: sees records of every logger
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    logging.captureWarnings(True)  # Python warnings as log lines too (one line each in json)
    root.setLevel(level)
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
