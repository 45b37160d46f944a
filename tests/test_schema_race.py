"""Processes that open a new store at the same moment all find one schema.

Each round starts a few real interpreters that import everything, wait for a start
signal (a file appearing), then open the store and write to it at once: on SQLite a
fresh file, on PostgreSQL a fresh database. Without the migration lock two of them
create the same tables (``table articles already exists``).
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from newsq.store.database import Store

ROUNDS = 4  # the old code failed 6 rounds in 8: 4 all passing by chance is <1 %
RACERS = 4

RACER = """
import sys, time
from pathlib import Path
from alembic import command  # imported before the start: the race is the schema's alone
from newsq.store.database import Store

url, go, name = sys.argv[1:]
Path(f"{go}.{name}.ready").touch()
while not Path(go).exists():
    time.sleep(0.002)
store = Store.from_url(url)
store.record_outcome({"url": f"http://racer.example/{name}", "state": "failed",
                      "reason": "timeout"})
store.close()
"""


def race(url: str, go: Path) -> list[subprocess.CompletedProcess[str]]:
    """Start RACERS processes on ``url``, let them go together; their results."""
    command = [sys.executable, "-c", RACER, url, str(go)]
    procs = [
        subprocess.Popen(
            [*command, str(n)], text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for n in range(RACERS)
    ]
    ready = [go.with_name(f"{go.name}.{n}.ready") for n in range(RACERS)]
    deadline = time.monotonic() + 60
    while not all(r.exists() for r in ready) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()  # every one imported and waiting: they open the store together
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


def check_round(url: str, go: Path) -> None:
    failed = [p.stderr[-600:] for p in race(url, go) if p.returncode]
    assert not failed, failed
    store = Store.from_url(url)
    try:
        assert store.state_counts() == {"failed": RACERS}
    finally:
        store.close()


def test_processes_creating_a_sqlite_store_at_once(tmp_path: Path) -> None:
    for n in range(ROUNDS):
        check_round(f"sqlite:///{tmp_path}/race-{n}.db", tmp_path / f"go-{n}")


@pytest.fixture
def fresh_databases(postgres_admin_url: str) -> Iterator[list[str]]:
    """ROUNDS empty PostgreSQL databases of this test's own."""
    admin = sa.engine.make_url(postgres_admin_url).set(drivername="postgresql+psycopg")
    names = [f"newsq_race_{uuid.uuid4().hex[:10]}" for _ in range(ROUNDS)]
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        for name in names:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield [admin.set(database=n).render_as_string(hide_password=False) for n in names]
    finally:
        with engine.connect() as conn:
            for name in names:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


def test_processes_creating_a_postgres_schema_at_once(
    fresh_databases: list[str], tmp_path: Path
) -> None:
    for n, url in enumerate(fresh_databases):
        check_round(url, tmp_path / f"go-{n}")
