"""Local workers started before their broker is known (``newsq run``, ``newsq demo``).

    python -m newsq.workers.prestart worker [ARGS]... [:: [ARGS]...]...

imports what a worker runs (Celery, the pipeline's libraries) and warms the clean stage
while the run starts its Redis and reads its input, then reads one line on stdin: a
JSON object of environment variables (the broker's URL, chosen meanwhile). It sets
them and runs ``newsq worker ARGS``, which then starts in a fraction of its cold time.
End of input with no line means the run had nothing to do: exit 0.

Several ARGS, apart by ``::``, are several workers, forked from this process once it
has imported and warmed everything (:mod:`newsq.workers.forked`).

Nothing imported here may read the settings (``get_settings`` caches them) or
configure the Celery app: both wait for the line.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import sys

from newsq.workers.common import leave_out_httpx_cli
from newsq.workers.early import make_tls_context, pause_gc, read_language_model
from newsq.workers.forked import fork_workers, leave, split

PRELOAD = (
    "celery.apps.worker",
    "celery.worker.consumer.consumer",
    "celery.concurrency.thread",
    "celery.concurrency.prefork",
    "kombu.transport.redis",
    "sqlalchemy",  # not Alembic: a store whose schema is current opens without it
    "newsq.store.database",
    "newsq.fetch.client",
    "newsq.feeds.parse",
    "newsq.dedup.index",
    "newsq.clean.extract",
    "newsq.pipeline",
)
"""Modules a worker imports on its way to its first task, none of them newsq's settings
or Celery app."""


def preload() -> None:
    """Import :data:`PRELOAD` and run the clean stage on one small page (trafilatura and
    lxml set up their own state on first use)."""
    from newsq.clean.extract import warm_up as warm_clean

    for name in PRELOAD:
        importlib.import_module(name)
    if not os.environ.get("NEWSQ_METRICS_PORT"):
        # prometheus-client must wait for its multiprocess folder (workers/worker.py)
        warm_clean()  # the worker's start-up (worker.py) runs it when metrics held it off


def main(argv: list[str]) -> int:
    pause_gc()
    leave_out_httpx_cli()
    read_language_model()  # from the first instant: beside the imports
    tls = make_tls_context()
    preload()
    tls.join()  # long done; the workers fork from this process
    gc.freeze()  # the forks' collections skip the preload's objects: their pages stay shared
    line = sys.stdin.readline()
    if not line.strip():
        return 0
    os.environ.update(json.loads(line))
    with open(os.devnull) as nothing:  # the worker's stdin: no longer the parent's pipe
        os.dup2(nothing.fileno(), 0)
    from newsq.workers.cli import main as cli_main

    workers = split(argv)
    if len(workers) == 1:
        leave(cli_main(workers[0]))
    fork_workers(workers, cli_main)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
