"""The README's error promises, through the real ``python -m newsq``: a bad input, an
unreachable broker or a mistyped flag is one line on stderr (never a traceback) and the
exit code the README's "Commands" section gives (0 done, 1 some input refused, 2 none)."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from newsq.workers.redis_server import RedisServer, free_port
from tests.cli import local_env, newsq_env, run_newsq
from tests.corpus_server import serve_pages

RSS = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>
<item><title>a</title><link>{base}/a</link></item></channel></rss>"""


def one_line(stderr: str) -> str:
    """The only line of ``stderr``; fails on a traceback or on more lines."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture
def env(redis_url: str, key_prefix: str, sqlite_url: str) -> dict[str, str]:
    """A real broker and store; private addresses blocked, as a user's default is."""
    out = local_env(redis_url, key_prefix, sqlite_url)
    del out["NEWSQ_ALLOW_PRIVATE"]
    return out


@pytest.fixture
def feed() -> Iterator[str]:
    """An RSS feed of one item, served on loopback."""
    pages: dict[str, bytes] = {"/a": b"<html><body><p>a page</p></body></html>"}
    with serve_pages(pages) as base:
        pages["/feed.xml"] = RSS.replace(b"{base}", base.encode())
        yield f"{base}/feed.xml"


# -- settings -----------------------------------------------------------------------


def test_a_log_level_that_is_no_level_name_is_one_line(tmp_path: Path) -> None:
    done = run_newsq("status", env=newsq_env(NEWSQ_LOG_LEVEL="verbose"), cwd=str(tmp_path),
                     timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert one_line(done.stderr).startswith("newsq: NEWSQ_LOG_LEVEL: 'verbose' is not 'DEBUG'")
    assert not (tmp_path / "newsq.db").exists()  # refused before anything was opened


@pytest.mark.parametrize(
    ("variable", "value", "args"),
    [
        ("NEWSQ_BROKER_URL", "redis://127.0.0.1:6x79/0", ["status"]),
        ("NEWSQ_BROKER_URL", "redis://127.0.0.1:70000/0", ["enqueue", "http://example.org/"]),
        ("NEWSQ_DATABASE_URL", "postgresql://newsq@127.0.0.1:pg/newsq", ["export"]),
        ("NEWSQ_FETCH_TIMEOUT", "1e300", ["fetch", "http://127.0.0.1:9/"]),  # was OverflowError
        ("NEWSQ_METRICS_PORT", "99999", ["status"]),
    ],
)  # fmt: skip
def test_a_bad_url_or_number_setting_is_one_line_naming_it(
    tmp_path: Path, variable: str, value: str, args: list[str]
) -> None:
    done = run_newsq(*args, env=newsq_env(**{variable: value}, NEWSQ_ALLOW_PRIVATE="1"),
                     cwd=str(tmp_path), timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert one_line(done.stderr).startswith(f"newsq: {variable}: {value!r}")
    assert not (tmp_path / "newsq.db").exists()


def test_run_refuses_a_metrics_port_that_leaves_its_last_worker_none(tmp_path: Path) -> None:
    env = newsq_env(NEWSQ_METRICS_PORT="65535")
    done = run_newsq("run", "--workers", "2", "http://127.0.0.1:9/a", "http://127.0.0.1:9/b",
                     env=env, cwd=str(tmp_path), timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert one_line(done.stderr) == ("newsq: NEWSQ_METRICS_PORT=65535: 2 local workers need "
                                     "ports up to 65536, over 65535")  # fmt: skip


def test_a_celery_config_module_that_fails_is_one_line(
    tmp_path: Path, redis_url: str, key_prefix: str
) -> None:
    (tmp_path / "broken_celery_settings.py").write_text("worker_prefetch_multiplier = (\n")
    env = newsq_env(NEWSQ_BROKER_URL=redis_url, NEWSQ_KEY_PREFIX=key_prefix,
                    NEWSQ_CELERY_CONFIG="broken_celery_settings",
                    PYTHONPATH=str(tmp_path))  # fmt: skip
    done = run_newsq("retry", "--dead", env=env, cwd=str(tmp_path), timeout=60)
    assert done.returncode == 2
    assert one_line(done.stderr).startswith(
        "newsq: NEWSQ_CELERY_CONFIG: 'broken_celery_settings' failed on import: SyntaxError"
    )


def test_allow_private_takes_a_bare_host_or_address(env: dict[str, str]) -> None:
    with serve_pages({"/a": b"<html><body><p>a page</p></body></html>"}) as base:
        blocked = run_newsq("fetch", f"{base}/a", env=env, timeout=60)
        allowed = {
            host: run_newsq("fetch", f"{base.replace('127.0.0.1', host)}/a",
                            env={**env, "NEWSQ_ALLOW_PRIVATE": host}, timeout=60)
            for host in ("127.0.0.1", "localhost")
        }  # fmt: skip
    assert json.loads(blocked.stdout)["reason"] == "blocked_address"
    for host, done in allowed.items():
        assert done.stderr == "", (host, done.stderr)
        assert json.loads(done.stdout)["ok"] is True, host


# -- exit codes of run / enqueue / fetch ---------------------------------------------


def test_run_of_an_invalid_url_says_so_counts_it_and_exits_0(env: dict[str, str]) -> None:
    done = run_newsq("run", "example.com/a", "--workers", "1", env=env, timeout=120)
    assert done.returncode == 0, done.stderr  # every URL enqueued (none) is terminal
    assert one_line(done.stderr) == "newsq: example.com/a: invalid_url"
    assert re.search(r"failed, invalid url\s+1\n", done.stdout), done.stdout


def test_enqueue_exits_1_when_an_input_is_refused_else_0(env: dict[str, str]) -> None:
    refused = run_newsq("enqueue", "example.com/a", "https://news.example/b", env=env)
    assert refused.returncode == 1
    assert one_line(refused.stderr) == "newsq: example.com/a: invalid_url"
    assert refused.stdout == "enqueued 1, already known 0, invalid 1\n"
    fine = run_newsq("enqueue", "https://news.example/c", env=env)
    assert (fine.returncode, fine.stderr) == (0, "")


def test_a_url_over_2048_characters_is_invalid_and_status_finds_it(
    env: dict[str, str], tmp_path: Path
) -> None:
    long = "https://news.example/" + "a" * 2100
    for command in (["enqueue", long], ["run", "--workers", "1", long + "b"]):
        done = run_newsq(*command, env=env, cwd=str(tmp_path), timeout=120)
        assert one_line(done.stderr) == f"newsq: {long[:200]}: invalid_url"
    for url in (long, long + "b"):  # stored under its first 2048 characters: found whole
        status = run_newsq("status", url, env=env, cwd=str(tmp_path), timeout=60)
        assert status.returncode == 0, status.stdout
        answer = json.loads(status.stdout)
        assert (answer["state"], answer["reason"]) == ("failed", "invalid_url")
        assert answer["url"] == url[:2048]


def test_a_url_file_that_is_no_list_of_urls_is_one_line(
    env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "junk.txt").write_bytes(bytes(range(128, 256)) * 8)
    for path, says in [("/dev/zero", "URL file /dev/zero: a line over 65536 bytes"),
                       ("junk.txt", "cannot read URL file junk.txt: 'utf-8' codec can't"),
                       (".", "cannot read URL file .: [Errno 21] Is a directory")]:  # fmt: skip
        done = run_newsq("enqueue", "--urls", path, env=env, cwd=str(tmp_path), timeout=60)
        assert done.returncode == 2  # /dev/zero was read whole: a MemoryError
        assert one_line(done.stderr).startswith(f"newsq: {says}")


def test_fetch_exits_1_when_not_ok(env: dict[str, str]) -> None:
    done = run_newsq("fetch", "ftp://news.example/a", env=env, timeout=60)
    assert done.returncode == 1
    assert json.loads(done.stdout)["reason"] == "invalid_url"
    assert done.stderr == ""


def test_a_feed_on_a_blocked_address_names_the_setting_and_exits_1(
    env: dict[str, str], feed: str
) -> None:
    blocked = run_newsq("enqueue", "--feed", feed, env=env)
    assert blocked.returncode == 1
    assert one_line(blocked.stderr) == (
        f"newsq: feed {feed}: blocked_address (NEWSQ_ALLOW_PRIVATE allows it)"
    )
    assert blocked.stdout.startswith("enqueued 0,")
    opened = run_newsq("enqueue", "--feed", feed, env={**env, "NEWSQ_ALLOW_PRIVATE": "127.0.0.1"})
    assert (opened.returncode, opened.stderr) == (0, "")
    assert opened.stdout.startswith("enqueued 1,")


# -- the worker and an unreachable broker ----------------------------------------------


def _worker(broker_url: str, *flags: str, level: str = "WARNING") -> subprocess.Popen[str]:
    env = newsq_env(NEWSQ_BROKER_URL=broker_url, NEWSQ_LOG_LEVEL=level)
    return subprocess.Popen([sys.executable, "-m", "newsq", "worker", "--queues", "fetch",
                             "--pool", "solo", *flags], env=env, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip


def _stderr_until(proc: subprocess.Popen[str], seconds: float, done: str = "") -> list[str]:
    """Lines of ``proc``'s stderr for ``seconds`` (or until one contains ``done``). A
    thread reads them: a select() on the pipe misses lines already in Python's buffer."""
    assert proc.stderr is not None
    stream = proc.stderr
    got: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in stream:
            got.put(line)
        got.put(None)

    threading.Thread(target=read, daemon=True).start()
    lines: list[str] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = got.get(timeout=left)
        except queue.Empty:
            break
        if line is None:
            break
        lines.append(line)
        if done and done in line:
            break
    return lines


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def test_a_worker_says_once_that_it_waits_for_an_unreachable_broker() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    proc = _worker(url)
    try:  # newsq's line first, then Celery's own retries (a supervisor sees them go on)
        lines = _stderr_until(proc, 60, done="Trying again")
    finally:
        _stop(proc)
    assert lines[0].startswith(f"newsq: broker {url} not reachable ("), lines
    assert lines[0].endswith("waiting for it forever (--broker-wait SECONDS gives up)\n")
    assert [ln for ln in lines if "forever" in ln] == lines[:1]
    assert "Trying again" in lines[-1] and not any("Traceback" in ln for ln in lines), lines


def test_broker_wait_gives_up_in_one_line_with_exit_2() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    started = time.monotonic()
    done = run_newsq("worker", "--broker-wait", "1.5", env=newsq_env(NEWSQ_BROKER_URL=url),
                     timeout=60)  # fmt: skip
    assert done.returncode == 2
    line = one_line(done.stderr)
    assert line.startswith(f"newsq: cannot reach Redis: {url}: ") and line.endswith(
        "(gave up after --broker-wait 1.5 s)"
    ), line
    assert time.monotonic() - started >= 1.5


def test_broker_wait_starts_the_worker_once_the_broker_answers() -> None:
    port = free_port()
    proc = _worker(f"redis://127.0.0.1:{port}/0", "--broker-wait", "60", level="INFO")
    try:
        time.sleep(2)
        assert proc.poll() is None  # still waiting
        with RedisServer(port=port):
            lines = _stderr_until(proc, 60, done="ready")
    finally:
        _stop(proc)
    assert any("ready" in ln for ln in lines), lines
    assert not any("not reachable" in ln or "Traceback" in ln for ln in lines), lines


# -- argument errors -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "command", "unknown"),
    [
        (["run", "--feeds", "x"], "newsq run", "--feeds"),
        (["feeds", "add", "--bogus", "https://news.example/rss"], "newsq feeds add", "--bogus"),
    ],
)
def test_a_mistyped_flag_shows_the_subcommands_usage(
    argv: list[str], command: str, unknown: str
) -> None:
    done = run_newsq(*argv, env=newsq_env(), timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith(f"usage: {command} [-h]"), done.stderr
    assert done.stderr.splitlines()[-1] == f"{command}: error: unrecognized arguments: {unknown}"
