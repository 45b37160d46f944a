"""The Celery application: Redis broker, JSON only, two queues.

``fetch``    I/O-bound fetching; run on a thread pool (many requests in flight).
``process``  CPU-bound cleaning, dedup and storing; run on prefork, one process per
             core, prefetch 1 so a slow page does not hold others hostage.

Delivery is at least once: tasks are acknowledged after they finish (``acks_late``),
a task whose worker died is delivered again (``task_reject_on_worker_lost``, and the
Redis transport's visibility timeout for a worker that vanished entirely), and every
stage is idempotent, so a second delivery changes nothing.

Redis only emulates acknowledgement: a taken message sits in an ``unacked`` hash and
any live worker puts it back on its queue once it is older than the visibility
timeout. So the timeout must exceed the longest a task can be held: its hard time
limit, and any retry countdown (an ETA task waits inside the worker, unacked).
:func:`max_countdown` bounds every countdown to a quarter of the timeout. The sweep
that restores messages runs every ``unacked_restore_interval`` seconds (kombu's
default is every 100 s), so a task of a worker killed outright runs again within the
visibility timeout plus a few seconds.

Two lanes per queue, fresh news first. A message sent with priority ``BULK`` (a
backlog: a URL file, a sitemap, a re-run; see ``newsq.feeds.send``) waits in a list of
its own beside the queue's (``<queue>`` + kombu's separator + ``9``). Each BRPOP of
kombu's Redis transport names every queue's fresh list before any bulk list, so a
worker takes a bulk message only when no fresh one of its queues waits. A worker of a
queue consumes both of its lanes: the lane is no part of its command line.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

from celery import Celery, signals
from kombu import Exchange, Queue

from newsq.config.settings import Settings, get_settings
from newsq.errors import ConfigError

if TYPE_CHECKING:
    import redis

FETCH_QUEUE = "fetch"
PROCESS_QUEUE = "process"
QUEUES = (FETCH_QUEUE, PROCESS_QUEUE)

# message priorities, as kombu's Redis transport orders them: lower is first
FRESH = 0
BULK = 9
LANES = (FRESH, BULK)
LANE_NAMES = {FRESH: "fresh", BULK: "bulk"}  # as newsq stats and the metrics say them
LANE_SEP = "\x06\x16"  # kombu's Redis transport: between a queue's name and its lane

# Task names, the one place they are written: messages already queued carry them, so
# they never change with the code's layout.
FETCH_TASK = "newsq.fetch"
FETCH_MANY_TASK = "newsq.fetch_many"
PROCESS_TASK = "newsq.process"
FEED_TASK = "newsq.feed"
POLL_FEEDS_TASK = "newsq.poll_feeds"
REQUEUE_STUCK_TASK = "newsq.requeue_stuck"
BACKFILL_TASK = "newsq.backfill_range"


SOFT_SHUTDOWN_TIMEOUT = 15.0


def fetch_time_limit(settings: Settings) -> float:
    """Soft time limit of one fetch task: robots.txt, the page, and slack."""
    return settings.fetch_time_limit or settings.fetch_timeout * 3 + 30


def max_countdown(settings: Settings) -> float:
    """Longest countdown a task may be sent with: a quarter of the visibility timeout.

    A countdown task is held unacked by the worker that took it; were it held longer
    than the visibility timeout, another worker would run it too.
    """
    return settings.visibility_timeout / 4


BROKER_CLIENT_NAME = "newsq"
"""The name of Celery's broker connections in newsq's processes (CLIENT SETNAME)."""

LOST_AFTER = 30.0
"""Seconds without progress after which a URL no message stands for is lost
(``newsq.recovery``)."""


def lost_after(settings: Settings) -> float:
    """Seconds without progress that make a URL no message stands for lost: at most
    ``NEWSQ_STUCK_AFTER``, after which any URL is sent again."""
    return min(LOST_AFTER, settings.stuck_threshold)


LOOK_EVERY = 10.0
"""Seconds between looks for lost URLs (``newsq.recovery``)."""


def look_every(settings: Settings) -> float:
    """Seconds between looks for lost URLs: twice in ``lost_after``, at least."""
    return min(LOOK_EVERY, lost_after(settings) / 2)


def stuck_every(settings: Settings) -> float:
    """Seconds between beat's stuck checks: a URL lost found in about a minute."""
    return min(settings.stuck_threshold / 2, LOST_AFTER)


def queue_keys(key_prefix: str, queue: str) -> tuple[str, ...]:
    """The Redis lists that hold ``queue``'s waiting messages: its fresh lane, its bulk."""
    return tuple(f"{key_prefix}:q:{queue}{f'{LANE_SEP}{lane}' if lane else ''}" for lane in LANES)


def queue_depths(client: redis.Redis, key_prefix: str,
                 queues: Sequence[str] = QUEUES) -> dict[str, dict[str, int]]:  # fmt: skip
    """Messages waiting in each queue, not yet taken by a worker, by lane name:
    ``{"fetch": {"fresh": 2, "bulk": 0}, ...}``."""
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        for key in queue_keys(key_prefix, queue):
            pipe.llen(key)
    lengths = iter(pipe.execute())
    return {q: {LANE_NAMES[lane]: int(next(lengths)) for lane in LANES} for q in queues}


def _sentinel(settings: Settings) -> bool:
    return (settings.broker_url or "").startswith("sentinel://")


def delivery_config(settings: Settings) -> dict[str, Any]:
    """The at-least-once settings every worker and producer must agree on."""
    restore_every = max(1.0, min(5.0, settings.visibility_timeout / 10))
    return {
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout,
            "global_keyprefix": f"{settings.key_prefix}:q:",
            # CLIENT LIST names newsq's connections; `newsq run` wakes its own workers'
            # BRPOPs by it as they stop (workers/embedded.py)
            "client_name": BROKER_CLIENT_NAME,
            "socket_keepalive": True,
            "health_check_interval": 30,
            # sweep for messages of dead workers every few seconds, on every sweep
            "unacked_restore_interval": restore_every,
            "unacked_restore_throttle": 1,
            # a worker killed while holding the sweep's mutex blocks sweeps this long
            "unacked_mutex_expire": 30,
            # one list per lane; producers and workers must agree on the steps
            "priority_steps": list(LANES),
            # kombu's sentinel:// transport asks its Sentinels for this master
            **({"master_name": settings.sentinel_master} if _sentinel(settings) else {}),
        },
        # a lost broker is waited for, forever, by producers and workers alike
        "broker_connection_retry_on_startup": True,
        "broker_connection_retry": True,
        "broker_connection_max_retries": None,
        "broker_channel_error_retry": True,
        # a task handing on to the next stage (or retrying) while Redis restarts waits
        # for it, about a minute, instead of failing: a failed hand-on is a lost URL
        "task_publish_retry": True,
        "task_publish_retry_policy": {
            "max_retries": 30,
            "interval_start": 0.5,
            "interval_step": 1.0,
            "interval_max": 2.0,
        },
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # a task killed by its hard time limit is not acked: the visibility timeout
        # delivers it again and the ledger's delivery count ends it as poison
        "task_acks_on_failure_or_timeout": False,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        # a cold shutdown (SIGQUIT) first lets running tasks finish for this long,
        # then hands the rest, countdown tasks included, back to the queue
        "worker_soft_shutdown_timeout": SOFT_SHUTDOWN_TIMEOUT,
        "worker_enable_soft_shutdown_on_idle": True,
    }


def task_annotations(settings: Settings, *, inline: bool) -> dict[str, dict[str, float]]:
    """Soft and hard time limits per task (a prefork pool enforces them, threads do not).

    ``inline``: the worker consumes the process queue too, so its fetch task processes
    the page it fetched and gets the sum of both stages' limits.
    """
    fetch_limit = fetch_time_limit(settings)
    process_limit = settings.process_time_limit
    fetch_soft = fetch_limit + process_limit if inline else fetch_limit
    fetch_grace = 45 if inline else 15
    return {
        FETCH_TASK: {"soft_time_limit": fetch_soft, "time_limit": fetch_soft + fetch_grace},
        # a batch runs in newsq's thread pool (no time limits) or only sends its URLs on
        FETCH_MANY_TASK: {"soft_time_limit": fetch_soft, "time_limit": fetch_soft + fetch_grace},
        PROCESS_TASK: {"soft_time_limit": process_limit, "time_limit": process_limit + 30},
        # a span of a WARC file is many pages; one delivered again goes on where it stopped
        BACKFILL_TASK: {
            "soft_time_limit": process_limit * 10,
            "time_limit": process_limit * 10 + 30,
        },
    }


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings derived from newsq's own."""
    return {
        "broker_url": settings.broker_url or "redis://127.0.0.1:6379/0",
        **delivery_config(settings),
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "result_backend": None,
        # each queue its own exchange and key: a message for one never lands in the other
        "task_queues": [
            Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES
        ],
        "task_default_queue": FETCH_QUEUE,
        "task_default_exchange": FETCH_QUEUE,
        "task_default_routing_key": FETCH_QUEUE,
        "task_routes": {
            **{
                name: {"queue": FETCH_QUEUE}
                for name in (
                    FETCH_TASK,
                    FETCH_MANY_TASK,
                    FEED_TASK,
                    POLL_FEEDS_TASK,
                    REQUEUE_STUCK_TASK,
                )
            },
            PROCESS_TASK: {"queue": PROCESS_QUEUE},
            BACKFILL_TASK: {"queue": PROCESS_QUEUE},
        },
        "task_annotations": task_annotations(settings, inline=False),
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        "worker_send_task_events": False,
        "enable_utc": True,
        "timezone": "UTC",
        # beat (``newsq worker --beat`` or ``newsq beat``) only ticks; which feeds are
        # due lives in the store, so beat keeps no schedule file of its own
        "beat_scheduler": "celery.beat:Scheduler",
        "beat_schedule": {
            "poll-feeds": {
                "task": POLL_FEEDS_TASK,
                "schedule": settings.feed_tick,
                "options": {"expires": max(settings.feed_tick, 1.0)},
            },
            # messages lost outright (see tasks/maintenance.py)
            "requeue-stuck": {
                "task": REQUEUE_STUCK_TASK,
                "schedule": stuck_every(settings),
                "options": {"expires": stuck_every(settings)},
            },
        },
    }


def user_config(module_name: str, ours: dict[str, Any]) -> dict[str, Any]:
    """Celery settings from the module ``NEWSQ_CELERY_CONFIG`` names, checked against
    newsq's own: a key newsq sets may not be changed there (its NEWSQ_* setting does
    that), except that ``broker_transport_options`` gains the keys newsq leaves unset
    (Sentinel's ``sentinel_kwargs``, ...)."""
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"NEWSQ_CELERY_CONFIG: cannot import {module_name!r}: {exc}") from None
    except Exception as exc:  # the module's own code failed: a SyntaxError, a NameError
        raise ConfigError(f"NEWSQ_CELERY_CONFIG: {module_name!r} failed on import: "
                          f"{type(exc).__name__}: {exc}") from None  # fmt: skip
    extra = {k: v for k, v in vars(module).items() if k.islower() and not k.startswith("_")}
    extra = {
        k: v for k, v in extra.items() if not isinstance(v, ModuleType | type) and not callable(v)
    }
    for key, value in extra.items():
        if key == "broker_transport_options" and isinstance(value, dict):
            clash = sorted(set(value) & set(ours[key]))
            if clash:
                raise ConfigError(
                    f"NEWSQ_CELERY_CONFIG: broker_transport_options {clash} are set by newsq"
                )
            extra[key] = {**ours[key], **value}
        elif key in ours:
            raise ConfigError(f"NEWSQ_CELERY_CONFIG: {key} is set by newsq")
    return extra


def make_app(settings: Settings) -> Celery:
    tasks = [
        "newsq.tasks.fetch",
        "newsq.tasks.process",
        "newsq.tasks.feeds",
        "newsq.tasks.maintenance",
        "newsq.tasks.backfill",
    ]
    app = Celery("newsq", include=tasks)
    config = celery_config(settings)
    if settings.celery_config:
        config.update(user_config(settings.celery_config, config))
    app.conf.update(config)
    return app


app = make_app(get_settings())

SENT_HEADER = "newsq_sent"
"""Each message's header: when it was sent (``time.time()`` of its sender)."""


@signals.before_task_publish.connect
def _stamp_sent(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """By the oldest waiting message's stamp the lost-URL look tells whether the queues
    turned over since it last looked (``newsq.recovery.Turnover``)."""
    if headers is not None:
        headers[SENT_HEADER] = time.time()
