"""Start-up: a command imports only what it runs, and ``newsq run``'s workers, started
before the broker is known, take it and work (``bench/README.md``: "Start-up")."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest

HEAVY = ("redis", "sqlalchemy", "alembic", "celery", "kombu", "trafilatura", "lxml", "rich",
         "pyarrow", "httpx", "numpy", "feedparser", "prometheus_client")  # fmt: skip

_LOADED = """
import json, sys
from newsq.workers.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {heavy})), file=sys.stderr)
"""


def printed(code: str, **env: str) -> list[str]:
    """The words ``code`` prints in a fresh interpreter with ``env`` added."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()


def loaded_by(*argv: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", _LOADED.format(heavy=set(HEAVY)), *argv],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    return json.loads(done.stderr.splitlines()[-1])


@pytest.mark.parametrize("argv", [("--version",), ("--help",), ("run", "--help"),
                                  ("feeds", "add", "--help")])  # fmt: skip
def test_version_and_help_import_none_of_the_heavy_libraries(argv: tuple[str, ...]) -> None:
    assert loaded_by(*argv) == []


def test_extract_loads_no_broker_store_or_celery(tmp_path: object) -> None:
    page = f"{tmp_path}/p.html"
    with open(page, "w") as file:
        file.write("<html><body><p>Hello</p></body></html>")
    roots = {name.split(".")[0] for name in loaded_by("extract", page)}
    assert not roots & {"redis", "sqlalchemy", "alembic", "celery", "kombu", "rich"}


def test_the_prestart_preload_leaves_settings_and_celery_app_alone() -> None:
    code = (
        "import sys\n"
        "from newsq.workers import prestart\n"
        "prestart.preload()\n"
        "from newsq.config.settings import get_settings\n"
        "print(get_settings.cache_info().currsize, 'newsq.config.celery' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.stdout.split() == ["0", "False"], done.stderr[-2000:]


def test_a_prestarted_worker_given_no_broker_exits_at_once() -> None:
    done = subprocess.run([sys.executable, "-m", "newsq.workers.prestart", "worker"],
                          input="", capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0 and done.stderr == ""


def test_the_migrations_head_is_alembics() -> None:
    from alembic.script import ScriptDirectory

    from newsq.store.database import _alembic_config, make_engine, newest_revision

    config = _alembic_config(make_engine("sqlite://"))
    assert newest_revision() == ScriptDirectory.from_config(config).get_current_head()


def test_a_current_store_opens_without_alembic(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    code = (
        "import sys\n"
        "from newsq.store.database import Store\n"
        f"Store.from_url({url!r}).close()\n"
        "print('alembic' in sys.modules)\n"
    )
    made, again = (subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                  timeout=60) for _ in range(2))  # fmt: skip
    assert made.stdout.split() == ["True"], made.stderr[-2000:]  # new: Alembic made it
    assert again.stdout.split() == ["False"], again.stderr[-2000:]


def test_a_sqlite_store_upserts_without_the_postgresql_dialect(tmp_path: object) -> None:
    # the dialect (asyncpg's with it) was imported by every worker and run: ~75 ms
    url = f"sqlite:///{tmp_path}/s.db"
    code = (
        "import sys\n"
        "from newsq.store.database import Store\n"
        f"store = Store.from_url({url!r})\n"
        "store.record_outcome({'url': 'https://example.com/a', 'state': 'failed'})\n"
        "store.record_origins({'https://example.com/b': {}})\n"
        "print(store.url_record('https://example.com/a')['state'],\n"
        "      'sqlalchemy.dialects.postgresql' in sys.modules)\n"
    )
    made, again = (subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                  timeout=60) for _ in range(2))  # fmt: skip
    assert made.stdout.split()[:1] == ["failed"], made.stderr[-2000:]  # Alembic may import it
    assert again.stdout.split() == ["failed", "False"], again.stderr[-2000:]


def test_the_preload_leaves_prometheus_alone_when_metrics_are_on() -> None:
    code = (
        "import sys\n"
        "from newsq.workers import prestart\n"
        "prestart.preload()\n"
        "print('prometheus_client' in sys.modules)\n"
    )
    assert printed(code, NEWSQ_METRICS_PORT="9100") == ["False"]


def test_a_run_of_urls_starts_no_more_workers_than_urls() -> None:
    from newsq.workers.run import processes_needed

    def args(**given: object) -> argparse.Namespace:
        return argparse.Namespace(**{"feed": [], "urls": [], "url": [], "workers": 4, **given})

    assert processes_needed(args(url=["http://a.example/1"])) == 1
    assert processes_needed(args(url=[f"http://a.example/{n}" for n in range(9)])) == 4
    assert processes_needed(args(url=["http://a.example/1"], feed=["http://a.example/rss"])) == 4


def _in_child(code: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()


def test_the_language_model_is_read_once_by_the_start_thread_and_waited_for() -> None:
    out = _in_child(
        "import threading\n"
        "from newsq.workers.early import read_language_model\n"
        "from newsq.clean import metadata\n"
        "reader = read_language_model()\n"
        "got = []\n"
        "pages = [threading.Thread(target=lambda: got.append(metadata.language_identifier()))\n"
        "         for _ in range(4)]\n"
        "[t.start() for t in pages]; [t.join() for t in pages]; reader.join()\n"
        "print(len({id(g) for g in got}), metadata._read_model.cache_info().misses)\n"
    )
    assert out == ["1", "1"]  # one identifier, read once, every page waited for it


def test_a_fork_while_the_model_is_read_waits_and_the_child_inherits_it() -> None:
    """A prefork pool forks its children after the start-up: none may inherit the
    model's lock held by the reading thread, nor miss the model."""
    out = _in_child(
        "import os\n"
        "from newsq.workers.early import read_language_model\n"
        "from newsq.clean import metadata\n"
        "read_language_model()\n"
        "while not metadata._MODEL_LOCK.locked():  # the thread reads the model now\n"
        "    pass\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os._exit(0 if metadata._read_model.cache_info().currsize == 1 else 3)\n"
        "print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))\n"
    )
    assert out == ["0"]


def test_the_warm_up_page_does_not_wait_for_the_language_model() -> None:
    """The clean stage's warm-up (a worker's start, before it takes a task) reads no
    model: the start's own thread does, beside it."""
    out = _in_child(
        "from newsq.clean.extract import warm_up\n"
        "from newsq.clean import metadata\n"
        "warm_up()\n"
        "print(metadata._read_model.cache_info().currsize)\n"
    )
    assert out == ["0"]


def test_a_sqlite_store_url_is_checked_without_sqlalchemy() -> None:
    # newsq run starts its workers once the settings are read: SQLAlchemy comes after
    code = (
        "import sys\n"
        "from newsq.config.settings import get_settings\n"
        "print(get_settings().database_url, 'sqlalchemy' in sys.modules)\n"
    )
    assert printed(code, NEWSQ_DATABASE_URL="sqlite:///runs/s.db") == [
        "sqlite:///runs/s.db",
        "False",
    ]


def test_a_prestarted_worker_imports_neither_rich_nor_pygments() -> None:
    # httpx's command line would bring both in with `import httpx` (workers.common)
    code = (
        "import sys\n"
        "from newsq.workers import prestart\n"
        "prestart.leave_out_httpx_cli()\n"
        "prestart.preload()\n"
        "import httpx\n"
        "roots = {m.split('.')[0] for m in sys.modules}\n"
        "print(callable(httpx.main), bool(roots & {'rich', 'pygments'}))\n"
    )
    assert printed(code) == ["True", "False"]


def test_a_process_loads_the_ca_bundle_once_for_all_its_http_clients() -> None:
    """Each load of certifi's bundle costs ~20 ms of a worker's start: the fetcher's
    transport loaded it twice (httpx's own pool, unused, and ours), each client again."""
    out = _in_child(
        "import ssl\n"
        "loads = []\n"
        "real = ssl.SSLContext.load_verify_locations\n"
        "def counted(self, *a, **k):\n"
        "    loads.append(1)\n"
        "    return real(self, *a, **k)\n"
        "ssl.SSLContext.load_verify_locations = counted\n"
        "from newsq.workers.early import make_tls_context\n"
        "from newsq.config.settings import Settings\n"
        "from newsq.fetch.client import Fetcher\n"
        "make_tls_context().join()\n"
        "fetchers = [Fetcher(Settings.from_env({})) for _ in range(2)]\n"
        "print(len(loads))\n"
    )
    assert out == ["1"]


def test_a_prestarted_worker_collects_no_garbage_until_it_is_ready() -> None:
    """The preload's imports make ~180,000 objects that all live: each collection walked
    them again, ~15 % of the preload. Its forks skip them (frozen); a worker that is
    ready collects again."""
    out = _in_child(
        "import gc, io, sys\n"
        "from newsq.workers import prestart\n"
        "collections = lambda: sum(s['collections'] for s in gc.get_stats())\n"
        "before = collections()\n"
        "sys.stdin = io.StringIO('')  # no broker line: the run had nothing to do\n"
        "code = prestart.main(['worker'])\n"
        "during, frozen = collections() - before, gc.get_freeze_count()\n"
        "from newsq.workers.worker import _freeze_gc  # worker_ready's handler\n"
        "_freeze_gc()\n"
        "print(code, during, frozen > 50_000, gc.isenabled())\n"
    )
    assert out == ["0", "0", "True", "True"]


def test_a_command_that_starts_without_collection_gives_it_back() -> None:
    """``newsq worker`` and ``newsq run`` start with collection off; a caller of the
    CLI's ``main`` finds it on again, whatever the command's end (here: no broker)."""
    code = (
        "import gc\n"
        "from newsq.workers.cli import main\n"
        "code = main(['worker'])\n"
        "print(code, gc.isenabled())\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSQ_")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)  # fmt: skip
    assert done.stdout.split() == ["2", "True"], done.stderr[-2000:]


def test_a_worker_waiting_for_its_broker_collects_meanwhile() -> None:
    """Collection is off through a worker's start; a broker that does not answer may
    keep it there for hours, retrying: the wait collects."""
    code = (
        "import gc, redis\n"
        "from newsq.workers.early import pause_gc\n"
        "from newsq.workers.worker import app, wait_for_broker\n"
        "pause_gc()\n"
        "try:\n"
        "    wait_for_broker(app, 0.3)\n"
        "except redis.ConnectionError:\n"
        "    print('gave up', gc.isenabled())\n"
    )
    assert printed(code, NEWSQ_BROKER_URL="redis://127.0.0.1:9/0") == ["gave", "up", "True"]


def test_collection_a_caller_turned_off_stays_off() -> None:
    """``resume_gc`` (the run's and the intake's, before they read feeds) undoes only
    ``pause_gc``: a program that calls ``newsq.api.enqueue`` with collection off keeps
    it off."""
    code = (
        "import gc\n"
        "from newsq.workers.early import pause_gc, resume_gc\n"
        "gc.disable()\n"
        "resume_gc()\n"
        "mine = gc.isenabled()\n"
        "pause_gc()\n"
        "resume_gc()\n"
        "print(mine, gc.isenabled())\n"
    )
    assert printed(code) == ["False", "True"]
