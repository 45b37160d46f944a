"""A throwaway Redis Cluster of three masters on loopback, for the tests and benchmarks.

Three ``redis-server --cluster-enabled yes`` processes on free ports, each in its own
temp folder, joined by ``redis-cli --cluster create`` (no replicas: the tests are about
where the keys go, not failover).
"""

from __future__ import annotations

import shutil
import subprocess
import time

import redis

from newsq.errors import ConfigError
from newsq.workers.redis_server import RedisServer, free_port

MASTERS = 3


class LocalCluster:
    """Start with :meth:`start`, stop with :meth:`stop` (or use it as a context)."""

    def __init__(self, masters: int = MASTERS) -> None:
        # the bus port on a free port of its own: port + 10000 may be taken or past 65535
        self.nodes = [RedisServer(extra=("--cluster-enabled", "yes", "--cluster-config-file",
                                         "nodes.conf", "--cluster-node-timeout", "5000",
                                         "--cluster-port", str(free_port())))
                      for _ in range(masters)]  # fmt: skip

    @property
    def url(self) -> str:
        """``NEWSQ_STATE_URL`` naming this cluster by all of its nodes."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    @property
    def ports(self) -> list[int]:
        return [n.port for n in self.nodes]

    def start(self, timeout: float = 30.0) -> LocalCluster:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise ConfigError("no redis-cli on PATH to create a cluster with")
        try:
            for node in self.nodes:
                node.start()
            subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                            "--cluster-replicas", "0", "--cluster-yes"],
                           check=True, capture_output=True, timeout=timeout)  # fmt: skip
            self._await_ok(time.monotonic() + timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _await_ok(self, deadline: float) -> None:
        """Until every node says the cluster is ok (all slots served, known to all)."""
        for port in self.ports:
            client = redis.Redis(port=port)
            try:
                while client.execute_command("CLUSTER INFO").get("cluster_state") != "ok":
                    if time.monotonic() > deadline:
                        raise ConfigError(f"the test cluster's node {port} is not ok")
                    time.sleep(0.05)
            finally:
                client.close()

    def client(self, port: int) -> redis.Redis:
        """A plain client of one node (its own keys, its INFO)."""
        return redis.Redis(port=port)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
