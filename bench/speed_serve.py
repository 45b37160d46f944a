"""Serving the benchmark pages on loopback: nginx (or a printed fallback), a delay proxy.

nginx is what a fair benchmark needs: Python's own ``http.server`` tops out near
90 pages/s on these 170 KB pages and eats a core that the pipeline needs. When nginx is
not installed, :func:`page_server` says so on stderr and falls back to the asyncio
static server of :mod:`bench.speed_http`, whose own CPU use the table then shows.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from newsq.workers.redis_server import free_port

NGINX_CONF = """\
{user}worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 120;
    keepalive_requests 1000000;
    types {{ text/html html; }}
    default_type text/html;
    charset utf-8;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {docroot};
    }}
}}
"""


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"bench: {what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"bench: {what} did not listen on port {port}")


def find_nginx() -> str | None:
    """The nginx binary: on PATH, or where Debian and a source build put it."""
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.path.exists(p)), None
    )


class Served:
    """A server subprocess on a loopback port; ``kind`` names it for the table."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, kind: str) -> None:
        self.proc = proc
        self.port = port
        self.kind = kind

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        """The server's processes (nginx: master and worker)."""
        import psutil

        try:
            me = psutil.Process(self.proc.pid)
            return [me.pid, *(c.pid for c in me.children(recursive=True))]
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def page_server(docroot: Path, tmp: Path) -> Served:
    """nginx serving ``docroot``; the asyncio fallback (with a warning) without nginx."""
    port = free_port()
    nginx = find_nginx()
    if nginx is None:
        print(
            "bench: WARNING: nginx is not installed (e.g. `apt-get install nginx`); serving "
            "the pages from a Python asyncio server instead. It uses CPU that the pipeline "
            "would otherwise get, so all throughputs below are lower than with nginx.",
            file=sys.stderr,
        )
        cmd = [sys.executable, "-m", "bench.speed_http", "static", str(docroot), str(port)]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
        _wait_port(port, proc, "the fallback static server")
        return Served(proc, port, "python asyncio static (fallback: no nginx)")
    conf = tmp / "nginx.conf"
    user = "user root root;\n" if os.geteuid() == 0 else ""
    conf.write_text(NGINX_CONF.format(user=user, tmp=tmp, port=port, docroot=docroot))
    cmd = [nginx, "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(conf)]
    proc = subprocess.Popen([*cmd, "-g", "daemon off;"], stdin=subprocess.DEVNULL)
    _wait_port(port, proc, "nginx")
    return Served(proc, port, "nginx")


def delay_proxy(upstream: Served, delay_ms: float) -> Served:
    """The asyncio delay proxy in its own process, in front of ``upstream``."""
    port = free_port()
    cmd = [sys.executable, "-m", "bench.speed_http", "proxy", str(upstream.port), str(port)]
    proc = subprocess.Popen([*cmd, str(delay_ms)], stdin=subprocess.DEVNULL)
    _wait_port(port, proc, "the delay proxy")
    return Served(proc, port, f"delay proxy {delay_ms:g} ms")
