"""``newsq run``'s workers are forked from one process that imported the pipeline once
(issue 19: each importing its own cost a second or more of CPU a worker, on the same
cores as the run), and they stop, or fail the run, as separate processes did."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from newsq.workers.forked import split
from tests.cli import local_env
from tests.corpus_server import serve_pages

pytestmark = pytest.mark.slow


def _pages(count: int) -> dict[str, bytes]:
    """``count`` stories of their own, by path."""
    return {
        f"/story/{n}": (
            f"<html><head><title>Story {n}</title></head><body><article>"
            + "".join(f"<p>Paragraph {k} of story {n}, its own words, long enough to be "
                      f"kept as the text.</p>" for k in range(8))
            + "</article></body></html>"
        ).encode()
        for n in range(count)
    }  # fmt: skip


def _start_run(base: str, count: int, tmp_path: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    urls = tmp_path / "urls.txt"
    urls.write_text("".join(f"{base}/story/{n}\n" for n in range(count)))
    return subprocess.Popen(
        [sys.executable, "-m", "newsq", "run", "--urls", str(urls), "--workers", "2"],
        env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def _prestarted(run: subprocess.Popen[str], timeout: float = 60) -> tuple[list[int], list[int]]:
    """The run's prestart processes and their children, once the workers are forked."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            direct = [p for p in psutil.Process(run.pid).children()
                      if "newsq.workers.prestart" in " ".join(p.cmdline())]  # fmt: skip
            forked = [c.pid for p in direct for c in p.children()]
        except psutil.Error:
            direct, forked = [], []
        if len(direct) == 2 or len(forked) == 2:  # two of their own (before), or forked
            return [p.pid for p in direct], forked
        assert run.poll() is None, run.communicate()
        time.sleep(0.05)
    raise AssertionError("no worker processes came up")


def _gone(pids: list[int]) -> bool:
    return not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"
                   for pid in pids)  # fmt: skip


def _watched_run(env: dict[str, str], tmp_path: Path, *, delay: float, urls: int,
                 kill_one: bool = False) -> tuple[int, str, list[int], list[int]]:  # fmt: skip
    """``newsq run --workers 2`` of ``urls`` pages taking ``delay`` s each, watched: its
    status, stderr, prestart processes and the workers forked from them (the first
    killed once both are up, with ``kill_one``)."""
    with serve_pages(_pages(urls), delay) as base:
        run = _start_run(base, urls, tmp_path, env)
        direct, forked = _prestarted(run)
        if kill_one:
            assert len(forked) == 2, (direct, forked)
            os.kill(forked[0], signal.SIGKILL)
        _, err = run.communicate(timeout=120)
    return run.returncode, err, direct, forked


def test_the_workers_are_forked_from_one_process_and_leave_with_the_run(
    redis_url: str, key_prefix: str, database_url: str, tmp_path: Path
) -> None:
    env = local_env(redis_url, key_prefix, database_url)
    code, err, direct, forked = _watched_run(env, tmp_path, delay=0.3, urls=8)
    assert code == 0, err
    assert len(direct) == 1, direct  # one import of the pipeline, not one a worker
    assert len(forked) == 2, forked
    assert _gone(direct + forked)


def test_a_forked_worker_that_dies_fails_the_run_and_the_other_stops(
    redis_url: str, key_prefix: str, database_url: str, tmp_path: Path
) -> None:
    env = local_env(redis_url, key_prefix, database_url)
    code, err, direct, forked = _watched_run(env, tmp_path, delay=2.0, urls=40, kill_one=True)
    assert code != 0
    assert "a worker process exited" in err, err
    assert _gone(direct + forked)


def test_the_command_lines_of_several_workers_are_apart_by_a_token() -> None:
    argv = ["worker", "--queues", "fetch", "::", "--queues", "process", "--pool", "prefork"]
    assert split(argv) == [["worker", "--queues", "fetch"],
                           ["worker", "--queues", "process", "--pool", "prefork"]]  # fmt: skip
    assert split(["worker", "--queues", "fetch,process"]) == [
        ["worker", "--queues", "fetch,process"]
    ]
