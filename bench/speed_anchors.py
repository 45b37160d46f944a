"""The anchors newsq's throughput is compared with, on the same pages in the same run.

1. trafilatura's own CLI crawler: ``trafilatura -i urls.txt --parallel W -o DIR`` with
   ``SLEEP_TIME = 0`` (no per-host pause) and ``SSRF_PROTECTION = off`` (the pages are
   on loopback) through ``--config-file``;
2. a bare pool: W processes, each with one reused ``httpx.Client``, fetch then
   ``trafilatura.extract`` (no queue, no dedup, no store): the floor of any design;
3. extraction alone from memory in W processes: ``trafilatura.extract`` and newsq's
   own ``clean.extract`` (the CPU limit);
4. fetching alone through the delay proxy (32 threads): the proxy is no bottleneck.

Each returns (pages done, seconds of wall time, CPU seconds of its processes).
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import trafilatura

Result = tuple[int, float, float]

_client: Any = None


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def trafilatura_cli(urls_file: Path, workers: int, tmp: Path) -> Result:
    """trafilatura's CLI over ``urls_file``; pages = output files written."""
    source = Path(trafilatura.__file__).parent / "settings.cfg"
    cfg = tmp / "trafilatura.cfg"
    text = re.sub(r"(?m)^SLEEP_TIME = .*$", "SLEEP_TIME = 0", source.read_text())
    text = re.sub(r"(?m)^SSRF_PROTECTION = .*$", "SSRF_PROTECTION = off", text)  # loopback
    cfg.write_text(text)
    out = tmp / "trafilatura-out"
    cli = Path(sys.executable).with_name("trafilatura")  # the venv's, PATH or not
    cmd = [str(cli), "-i", str(urls_file), "--parallel", str(workers)]
    cmd += ["--config-file", str(cfg), "-o", str(out)]
    cpu0, started = _children_cpu(), time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    return sum(1 for _ in out.rglob("*.txt")), wall, _children_cpu() - cpu0


def _fetch_extract(url: str) -> bool:
    global _client
    if _client is None:
        import httpx

        _client = httpx.Client(timeout=30)
    html = _client.get(url).text
    return bool(trafilatura.extract(html, url=url))


def _extract_trafilatura(html: str) -> bool:
    return bool(trafilatura.extract(html))


def _extract_newsq(html: str) -> bool:
    from newsq.clean.extract import extract
    from newsq.records import Article

    return isinstance(extract(html, "http://127.0.0.1/p/x.html"), Article)


def _warm(_: int) -> int:
    import httpx  # noqa: F401

    from newsq import clean  # noqa: F401

    return os.getpid()


def _pool_run(fn: Callable[[Any], bool], items: list[Any], workers: int) -> Result:
    with get_context("fork").Pool(workers) as pool:
        pids = set(pool.map(_warm, range(workers * 4)))
        import psutil

        procs = [psutil.Process(p) for p in pids]
        cpu0 = sum(sum(p.cpu_times()[:2]) for p in procs)
        started = time.perf_counter()
        done = sum(pool.imap_unordered(fn, items, chunksize=2))
        wall = time.perf_counter() - started
        cpu = sum(sum(p.cpu_times()[:2]) for p in procs) - cpu0
    return done, wall, cpu


def bare_pool(urls: list[str], workers: int) -> Result:
    """W processes, one reused httpx client each: fetch, then trafilatura.extract."""
    return _pool_run(_fetch_extract, urls, workers)


def fetch_only(urls: list[str], threads: int) -> Result:
    """Fetching alone, ``threads`` threads sharing one client: can the server keep up?"""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    limits = httpx.Limits(max_connections=threads, max_keepalive_connections=threads)
    with httpx.Client(timeout=30, limits=limits) as client, ThreadPoolExecutor(threads) as pool:
        cpu0, started = time.process_time(), time.perf_counter()
        done = sum(r.status_code == 200 for r in pool.map(client.get, urls))
        return done, time.perf_counter() - started, time.process_time() - cpu0


def extract_only(htmls: list[str], workers: int, which: str) -> Result:
    """Extraction alone from memory (``which``: "trafilatura" or "newsq")."""
    fn = _extract_trafilatura if which == "trafilatura" else _extract_newsq
    return _pool_run(fn, htmls, workers)
