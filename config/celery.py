"""The Celery application: Redis broker, JSON only, two queues.

``fetch``    I/O-bound fetching; run on a thread pool (many requests in flight).
``process``  CPU-bound cleaning, dedup and storing; run on prefork, one process per
             core, prefetch 1 so a slow page does not hold others hostage.

Delivery is at least once: tasks are acknowledged after they finish (``acks_late``),
a task whose worker died is delivered again (``task_reject_on_worker_lost``, and the
Redis transport's visibility timeout for a worker that vanished entirely), and every
stage is idempotent, so a second delivery changes nothing.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Queue

from config.settings import Settings, get_settings

FETCH_QUEUE = "fetch"
PROCESS_QUEUE = "process"
QUEUES = (FETCH_QUEUE, PROCESS_QUEUE)


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings derived from newsq's own."""
    fetch_limit = settings.fetch_timeout * 3 + 30  # robots.txt, the page, and slack
    return {
        "broker_url": settings.broker_url or "redis://127.0.0.1:6379/0",
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout,
            "global_keyprefix": f"{settings.key_prefix}:q:",
            "socket_keepalive": True,
            "health_check_interval": 30,
        },
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "broker_channel_error_retry": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "result_backend": None,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "task_queues": [Queue(FETCH_QUEUE), Queue(PROCESS_QUEUE)],
        "task_default_queue": FETCH_QUEUE,
        "task_routes": {
            "newsq.fetch": {"queue": FETCH_QUEUE},
            "newsq.feed": {"queue": FETCH_QUEUE},
            "newsq.poll_feeds": {"queue": FETCH_QUEUE},
            "newsq.process": {"queue": PROCESS_QUEUE},
        },
        "task_annotations": {
            "newsq.fetch": {"soft_time_limit": fetch_limit, "time_limit": fetch_limit + 15},
            "newsq.process": {"soft_time_limit": 120, "time_limit": 150},
        },
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        "worker_send_task_events": False,
        "enable_utc": True,
        "timezone": "UTC",
    }


def make_app(settings: Settings) -> Celery:
    app = Celery("newsq", include=["tasks.fetch", "tasks.process"])
    app.conf.update(celery_config(settings))
    return app


app = make_app(get_settings())
