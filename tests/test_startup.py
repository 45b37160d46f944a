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


def test_the_preload_leaves_prometheus_alone_when_metrics_are_on() -> None:
    code = (
        "import sys\n"
        "from newsq.workers import prestart\n"
        "prestart.preload()\n"
        "print('prometheus_client' in sys.modules)\n"
    )
    env = {**os.environ, "NEWSQ_METRICS_PORT": "9100"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)  # fmt: skip
    assert done.stdout.split() == ["False"], done.stderr[-2000:]


def test_a_run_of_urls_starts_no_more_workers_than_urls() -> None:
    from newsq.workers.run import processes_needed

    def args(**given: object) -> argparse.Namespace:
        return argparse.Namespace(**{"feed": [], "urls": [], "url": [], "workers": 4, **given})

    assert processes_needed(args(url=["http://a.example/1"])) == 1
    assert processes_needed(args(url=[f"http://a.example/{n}" for n in range(9)])) == 4
    assert processes_needed(args(url=["http://a.example/1"], feed=["http://a.example/rss"])) == 4
