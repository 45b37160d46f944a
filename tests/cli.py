"""Running the real ``newsq`` command line from tests, as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def newsq_env(**settings: str) -> dict[str, str]:
    """This process's environment without any ``NEWSQ_*`` of the developer's, plus
    ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSQ_")}
    env.update(settings)
    return env


def local_env(redis_url: str, key_prefix: str, database_url: str, **extra: str) -> dict[str, str]:
    """Settings for the pipeline against the test servers and pages on loopback."""
    return newsq_env(
        NEWSQ_BROKER_URL=redis_url,
        NEWSQ_DATABASE_URL=database_url,
        NEWSQ_KEY_PREFIX=key_prefix,
        NEWSQ_ALLOW_PRIVATE="1",
        NEWSQ_HOST_RATE="0",
        NEWSQ_ROBOTS="0",
        # the sample site's feeds are dated years back; a test of the age limit sets it
        **{"NEWSQ_MAX_AGE_DAYS": "0", **extra},
    )


def run_newsq(
    *args: str, env: dict[str, str], timeout: float = 300, cwd: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``newsq ARGS`` in a child process; its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "newsq", *args],
        env=env,
        cwd=cwd,
        text=True,
        capture_output=True,
        timeout=timeout,
    )


def imported_by(*modules: str) -> set[str]:
    """The modules a fresh interpreter has loaded once it imported ``modules``."""
    code = f"import json, sys, {', '.join(modules)}; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], env=newsq_env(), text=True,
                          capture_output=True, check=True, timeout=60)  # fmt: skip
    return set(json.loads(done.stdout))


def store_outcome(database_url: str) -> tuple[dict[str, str], list[str]]:
    """The store's state of every URL, and the URL of every article row it holds."""
    import sqlalchemy as sa

    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        states = dict(conn.execute(sa.text("SELECT url, state FROM urls")).tuples().all())
        stored = list(conn.execute(sa.text("SELECT url FROM articles")).scalars().all())
    engine.dispose()
    return states, stored
