"""CPU per stage of one page, in one process, without Celery: where newsq's time goes.

    python -m bench.speed_stages [--pages 242] [--profile]

Runs ``fetch_step`` and the in-memory ``process_step`` (what a combined worker's task
does) page after page against nginx, a private Redis and a fresh SQLite store, timing
each stage's CPU; ``--profile`` prints the top of a cProfile instead.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.speed_pages import write_pages
from bench.speed_serve import page_server
from newsq import pipeline
from newsq.config.settings import AllowPrivate, Settings
from newsq.ledger import Ledger
from newsq.resources import Runtime
from newsq.workers.redis_server import RedisServer

SPENT: dict[str, float] = defaultdict(float)


@contextmanager
def _timed(name: str) -> Iterator[None]:
    started = time.process_time()
    try:
        yield
    finally:
        SPENT[name] += time.process_time() - started


def _wrap(obj: Any, attr: str, name: str) -> None:
    inner: Callable[..., Any] = getattr(obj, attr)

    def timed(*args: Any, **kwargs: Any) -> Any:
        with _timed(name):
            return inner(*args, **kwargs)

    setattr(obj, attr, timed)


def instrument(rt: Runtime) -> None:
    """Time the stages a task calls through the runtime's resources."""
    _wrap(rt.fetcher, "fetch", "fetch (httpx, guard, decode)")
    _wrap(rt, "extract", "clean.extract")
    _wrap(rt.boilerplate, "strip", "boilerplate (Lua)")
    _wrap(rt.dedup, "decide", "dedup (MinHash + Lua)")
    _wrap(rt.store, "save_article", "store (SQLite commit)")
    _wrap(rt.ledger, "begin", "ledger")
    _wrap(rt.ledger, "move", "ledger")
    _wrap(rt.politeness, "acquire", "politeness")
    _wrap(rt.politeness, "release", "politeness")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.speed_stages")
    parser.add_argument("--pages", type=int, default=242)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="newsq-stages-") as name:
        tmp = Path(name)
        paths = write_pages(tmp / "www", args.pages)
        server = page_server(tmp / "www", tmp)
        redis_server = RedisServer().start()
        try:
            settings = Settings(
                broker_url=redis_server.url,
                database_url=f"sqlite:///{tmp / 'store.db'}",
                allow_private=AllowPrivate(all=True),
                host_rate=0,
                robots=False,
                key_prefix=f"stages{uuid.uuid4().hex[:6]}",
            )
            rt = Runtime(settings)
            urls = [server.base + p for p in paths]
            Ledger(rt.redis, settings.key_prefix).enqueue(urls)
            rt.store  # noqa: B018 - schema made before timing
            instrument(rt)
            profile = cProfile.Profile() if args.profile else None
            started = time.process_time()
            if profile:
                profile.enable()
            for url in urls:
                step = pipeline.fetch_step(rt, url, hand_off=False)
                if step.page is not None:
                    pipeline.process_step(rt, url, step.page)
            if profile:
                profile.disable()
            total = time.process_time() - started
            rt.close()
        finally:
            server.stop()
            redis_server.stop()
    if profile:
        pstats.Stats(profile).sort_stats("cumulative").print_stats(40)
        return 0
    print("| stage | CPU ms/page | share |\n|---|---|---|")
    for stage, spent in sorted(SPENT.items(), key=lambda kv: -kv[1]):
        print(f"| {stage} | {1000 * spent / len(urls):.2f} | {spent / total:.0%} |")
    rest = total - sum(SPENT.values())
    print(f"| rest (pipeline, zlib, logging, metrics) | {1000 * rest / len(urls):.2f} "
          f"| {rest / total:.0%} |")  # fmt: skip
    print(f"| **total, one process, no Celery** | {1000 * total / len(urls):.2f} | 100% |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
