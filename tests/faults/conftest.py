"""Fixtures of the fault-injection suite: a PostgreSQL of its own (the suite stops
and starts it), a site with latency, and the environment handed to worker processes.

Every case uses short visibility timeouts so a lost worker's tasks come back fast.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.faults.harness import Workers
from tests.faults.site import Site, serve
from tests.servers import PostgresServer

VISIBILITY_TIMEOUT = 12


@pytest.fixture(scope="session")
def fault_pg() -> Iterator[PostgresServer]:
    """A private PostgreSQL cluster: the suite may stop it."""
    try:
        server = PostgresServer().start()
    except Exception as exc:
        pytest.skip(f"no PostgreSQL binaries: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fault_db(fault_pg: PostgresServer) -> str:
    name = f"faults_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(fault_pg.url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return sa.engine.make_url(fault_pg.url).set(database=name).render_as_string(False)


@pytest.fixture
def site() -> Iterator[Site]:
    with serve(Site().build()) as served:
        yield served


@pytest.fixture
def fault_env(redis_url: str, key_prefix: str, fault_db: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "NEWSQ_BROKER_URL": redis_url,
        "NEWSQ_DATABASE_URL": fault_db,
        "NEWSQ_KEY_PREFIX": key_prefix,
        "NEWSQ_ALLOW_PRIVATE": "1",
        "NEWSQ_HOST_RATE": "0",
        "NEWSQ_HOST_CONCURRENCY": "64",
        "NEWSQ_ROBOTS": "0",
        "NEWSQ_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT),
        "NEWSQ_FETCH_TIMEOUT": "5",
        "NEWSQ_FETCH_RETRIES": "2",
        "NEWSQ_LOG_LEVEL": "INFO",
    })  # fmt: skip
    return env


@pytest.fixture
def workers(fault_env: dict[str, str], tmp_path: Path) -> Iterator[Workers]:
    running = Workers(env=fault_env, logs=tmp_path)
    try:
        yield running
    finally:
        running.stop()
