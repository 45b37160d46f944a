"""Fetch-stage report: hostile cases (reason, seconds, peak RSS), hostile or missing
robots.txt files (the verdict ``newsq fetch`` and the pipeline act on) and client reuse.

Each hostile case runs in a fresh subprocess so its peak RSS (``ru_maxrss`` of that one
child, from ``os.wait4``) is its own. Targets: every case ends within timeout + 1 s;
the gzip bomb (1 GiB of zeros) peaks below 150 MB.

    python bench/fetch_report.py [--timeout 5] [--requests 200]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.hostile_server import HostileServer  # noqa: E402

CASES = [
    ("plain page (baseline)", "/ok"),
    ("never responds", "/silent"),
    ("drips a byte per second", "/drip"),
    ("drips the headers", "/drip-headers"),
    ("declared-huge Content-Length", "/huge-length"),
    ("endless chunked body", "/endless"),
    ("gzip bomb (1 GiB of zeros)", "/gzip-bomb"),
    ("redirect loop", "/loop-a"),
    ("redirect chain of 9", "/chain/9"),
    ("reset mid-body", "/reset"),
    ("wrong charset", "/wrong-charset"),
    ("unknown charset", "/unknown-charset"),
    ("binary served as HTML", "/binary"),
    ("non-HTML type", "/pdf"),
    ("404", "/404"),
    ("503 + Retry-After", "/503"),
    ("429 + Retry-After date", "/429"),
]

ROBOTS_CASES: list[tuple[str, str | int | None, str]] = [
    ("robots.txt 503", 503, "/a"),
    ("robots.txt 429", 429, "/a"),
    ("robots.txt never answers", None, "/a"),
    ("robots.txt 404 (no file)", 404, "/a"),
    (
        "Disallow: /news + Allow: /news/public",
        "User-agent: *\nDisallow: /news\nAllow: /news/public\n",
        "/news/public/a",
    ),
    ("Disallow: /*.pdf$", "User-agent: *\nDisallow: /*.pdf$\n", "/a/b.pdf"),
    ("Disallow: /*.pdf$, a query after it", "User-agent: *\nDisallow: /*.pdf$\n", "/b.pdf?x=1"),
    ("User-agent: news + Disallow: /", "User-agent: news\nDisallow: /\n", "/a"),
    ("User-agent: NEWSQ + Disallow: /", "User-agent: NEWSQ\nDisallow: /\n", "/a"),
]
"""(case, robots.txt text or the status it is answered with or None: never answers, path)."""

CHILD = """
import json, sys, time
from newsq.config.settings import AllowPrivate, Settings
from newsq.fetch.client import Fetcher
url, timeout = sys.argv[1], float(sys.argv[2])
with Fetcher(Settings(allow_private=AllowPrivate(all=True), fetch_timeout=timeout)) as f:
    started = time.monotonic()
    result = f.fetch(url)
    took = time.monotonic() - started
print(json.dumps({"reason": result.reason, "status": result.status, "seconds": took}))
"""


def run_case(url: str, timeout: float) -> tuple[dict[str, object], float]:
    """(the child's JSON, its peak RSS in MB)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, url, str(timeout)], cwd=ROOT, stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"case {url} crashed with exit code {proc.returncode}")
    return json.loads(out), usage.ru_maxrss / 1024  # kB on Linux


def hostile_table(server: HostileServer, timeout: float) -> bool:
    print(f"## Hostile servers (fetch_timeout={timeout:g} s, max_bytes=10 MB)\n")
    print("| case | reason | status | seconds | peak RSS MB | within timeout+1 s |")
    print("|---|---|---|---|---|---|")
    good = True
    for name, path in CASES:
        result, rss = run_case(server.url(path), timeout)
        seconds = float(result["seconds"])  # type: ignore[arg-type]
        within = seconds <= timeout + 1
        if path == "/gzip-bomb":
            within = within and rss < 150
        good = good and within
        print(
            f"| {name} | {result['reason'] or 'ok'} | {result['status']} | {seconds:.2f} "
            f"| {rss:.0f} | {'yes' if within else 'NO'} |"
        )
    return good


def robots_table(timeout: float) -> bool:
    """Each case's verdict; an unreachable robots.txt must be "retry", never a verdict."""
    import socket

    from newsq.config.settings import AllowPrivate, Settings
    from newsq.fetch.client import Fetcher
    from newsq.fetch.robots import Verdict, check_once

    print(f"\n## robots.txt (fetch_timeout={timeout:g} s; the pipeline retries an unreachable"
          " one like a failed fetch)\n")  # fmt: skip
    print("| case | path | verdict | detail | seconds |")
    print("|---|---|---|---|---|")
    settings = Settings(allow_private=AllowPrivate(all=True), fetch_timeout=timeout)

    def timed_check(url: str) -> tuple[Verdict, float]:
        with Fetcher(settings) as fetcher:  # closed before its server is
            started = time.monotonic()
            return check_once(fetcher, settings, url), time.monotonic() - started

    good = True
    for name, robots, path in ROBOTS_CASES:
        if robots is None:  # a listening socket that never answers
            with socket.socket() as silent:
                silent.bind(("127.0.0.1", 0))
                silent.listen(1)
                verdict, took = timed_check(f"http://127.0.0.1:{silent.getsockname()[1]}{path}")
        else:
            with HostileServer(robots=robots) as server:
                verdict, took = timed_check(server.url(path))
        shown = "allowed" if verdict.allowed else verdict.reason
        if verdict.failure is not None:
            shown = f"{verdict.reason}: retry"
            good = good and verdict.failure.retryable
        print(f"| {name} | `{path}` | {shown} | {verdict.detail or ''} | {took:.3f} |")
    return good


def reuse_table(server: HostileServer, requests: int) -> None:
    import httpx

    from newsq.config.settings import AllowPrivate, Settings
    from newsq.fetch.client import Fetcher

    url = server.url("/ok")
    rows = []

    def timed(name: str, body: object) -> None:
        before = server.connections
        started = time.perf_counter()
        body()  # type: ignore[operator]
        took = time.perf_counter() - started
        rows.append((name, took, server.connections - before))

    def fresh_httpx() -> None:
        for _ in range(requests):
            with httpx.Client() as client:
                client.get(url).raise_for_status()

    def reused_httpx() -> None:
        with httpx.Client() as client:
            for _ in range(requests):
                client.get(url).raise_for_status()

    settings = Settings(allow_private=AllowPrivate(all=True), fetch_timeout=10)

    def fresh_fetcher() -> None:
        for _ in range(requests):
            with Fetcher(settings) as f:
                assert f.fetch(url).ok

    def reused_fetcher() -> None:
        with Fetcher(settings) as f:
            for _ in range(requests):
                assert f.fetch(url).ok

    timed("httpx.Client per request", fresh_httpx)
    timed("one httpx.Client reused", reused_httpx)
    timed("Fetcher per request", fresh_fetcher)
    timed("one Fetcher reused (newsq)", reused_fetcher)
    print(f"\n## Client reuse ({requests} sequential GETs of a small page on 127.0.0.1)\n")
    print("| client | total s | ms per request | TCP connections |")
    print("|---|---|---|---|")
    for name, took, conns in rows:
        print(f"| {name} | {took:.2f} | {took / requests * 1000:.2f} | {conns} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--timeout", type=float, default=5.0, help="fetch_timeout, seconds")
    parser.add_argument("--requests", type=int, default=200, help="GETs per reuse row")
    args = parser.parse_args()
    with HostileServer() as server:
        good = hostile_table(server, args.timeout)
        good = robots_table(args.timeout) and good
        reuse_table(server, args.requests)
    print("\nall targets met" if good else "\nSOME TARGETS MISSED")
    return 0 if good else 1


if __name__ == "__main__":
    raise SystemExit(main())
