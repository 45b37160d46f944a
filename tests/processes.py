"""Worker processes started by tests, in their own session so a stop takes their children."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def running(cmd: Sequence[str], env: Mapping[str, str], log: Path,
            cwd: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:  # fmt: skip
    """``cmd`` running with its stderr in ``log``; stopped (SIGTERM, then SIGKILL after
    30 s) with all its children on exit."""
    with log.open("wb") as out:
        proc = subprocess.Popen(list(cmd), env=dict(env), cwd=cwd, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=out)  # fmt: skip
    try:
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
