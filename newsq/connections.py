"""Redis clients for the broker and for the shared state, made in one place.

The broker (``NEWSQ_BROKER_URL``) carries Celery's messages: its queues, the messages
taken and not acknowledged, kombu's routing tables. The shared state
(``NEWSQ_STATE_URL``, by default the broker's Redis) is everything else newsq keeps in
Redis: the URL ledger, the dedup index, politeness, robots.txt, the boilerplate
fingerprints, the counters and the throughput series. Every client of either is made
by :func:`state_redis` or :func:`broker_redis`.

Either URL may name Redis Sentinels instead of a server, as kombu's ``sentinel://``
transport reads them: ``sentinel://[:PASSWORD@]HOST[:PORT][/DB];sentinel://HOST2...``.
The client then asks the Sentinels for the master they call ``NEWSQ_SENTINEL_MASTER``
and asks again whenever a connection to it fails, so a failover costs a retry.

The state's URL may instead name a Redis Cluster, ``redis+cluster://[USER:PASSWORD@]HOST:PORT
[,HOST2:PORT2...]`` (``rediss+cluster://`` for TLS): any of its nodes, from which
redis-py's :class:`~redis.cluster.RedisCluster` learns the rest; a plain ``redis://``
state URL of a node whose ``INFO`` says ``cluster_enabled:1`` is read the same way.
Every state key carries a hash tag that names what it belongs to, and each script's keys
share one, so the state spreads over the shards (the README's "What newsq keeps in
Redis").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import unquote, urlsplit

from newsq.errors import ConfigError

if TYPE_CHECKING:
    import redis
    from redis.commands.core import Script

    from newsq.config.settings import Settings

SENTINEL_SCHEME = "sentinel://"
SENTINEL_PORT = 26379
CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")


@dataclass(frozen=True)
class SentinelURL:
    """A ``sentinel://`` URL read: the Sentinels, and the master's database and login
    (kombu's reading: the first password given is the master's, as is the database)."""

    sentinels: tuple[tuple[str, int], ...]
    db: int = 0
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, raw: str) -> SentinelURL:
        """Raises ValueError saying what is wrong."""
        sentinels: list[tuple[str, int]] = []
        db, username, password = None, None, None
        for part in (p.strip() for p in raw.split(";")):
            if not part:
                continue  # kombu ignores an empty entry (a trailing ';')
            if not part.startswith(SENTINEL_SCHEME):
                raise ValueError(f"{part!r} does not start with {SENTINEL_SCHEME}")
            parts = urlsplit(part)
            port = parts.port  # ValueError when it is no number or out of range
            if not parts.hostname:
                raise ValueError(f"{part!r} names no host")
            if port == 0:
                raise ValueError(f"{part!r}: the port must be 1 to 65535")
            path = parts.path.strip("/")
            if path and not path.isdigit():
                raise ValueError(f"the database {path!r} is not a number")
            if path and db is None:
                db = int(path)
            if parts.password is not None and password is None:
                username = unquote(parts.username) if parts.username else None
                password = unquote(parts.password)
            sentinels.append((parts.hostname, port or SENTINEL_PORT))
        if not sentinels:
            raise ValueError("it names no Sentinel")
        return cls(tuple(sentinels), db or 0, username, password)


@dataclass(frozen=True)
class ClusterURL:
    """A ``redis+cluster://`` URL read: the nodes to start from, the login, TLS."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @classmethod
    def parse(cls, raw: str) -> ClusterURL:
        """Raises ValueError saying what is wrong."""
        scheme, _, rest = raw.partition("://")
        if f"{scheme}://" not in CLUSTER_SCHEMES:
            raise ValueError(f"it does not start with {' or '.join(CLUSTER_SCHEMES)}")
        netloc, _, path = rest.partition("/")
        if path.partition("?")[0].strip("/") not in ("", "0"):
            raise ValueError("a Redis Cluster has only database 0")
        login, _, hosts = netloc.rpartition("@")
        username, password = None, None
        if login:
            user, has_password, secret = login.partition(":")
            username = unquote(user) or None
            password = unquote(secret) if has_password else None
        nodes = []
        for part in filter(None, (h.strip() for h in hosts.split(","))):
            parts = urlsplit(f"redis://{part}")
            port = parts.port  # ValueError when it is no number or out of range
            if port == 0:
                raise ValueError(f"{part!r}: the port must be 1 to 65535")
            if not parts.hostname or not port:
                raise ValueError(f"{part!r} is not HOST:PORT")
            nodes.append((parts.hostname, port))
        if not nodes:
            raise ValueError("it names no node")
        return cls(tuple(nodes), username, password, scheme.startswith("rediss"))

    @classmethod
    def of_node(cls, url: str) -> ClusterURL:
        """A ``redis://`` URL of one node, read as the cluster's."""
        parts = urlsplit(url)
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
        node = (parts.hostname or "localhost", parts.port or 6379)
        return cls((node,), username, password, parts.scheme == "rediss")


def is_cluster_url(url: str | None) -> bool:
    return bool(url) and str(url).startswith(CLUSTER_SCHEMES)


def redis_for(url: str, master: str | None, **options: Any) -> redis.Redis:
    """A client of the Redis at ``url``: a ``redis://``, ``rediss://`` or ``unix://``
    server, the master ``master`` of the Sentinels a ``sentinel://`` URL names, or a Redis
    Cluster (``redis+cluster://``). ``options`` are redis-py's connection options
    (``socket_timeout``, ...)."""
    import redis

    if is_cluster_url(url):
        return _cluster_for(ClusterURL.parse(url), **options)
    if not url.startswith(SENTINEL_SCHEME):
        return redis.Redis.from_url(url, **options)
    from redis.sentinel import Sentinel

    if not master:
        raise ConfigError("a sentinel:// URL needs NEWSQ_SENTINEL_MASTER")
    parsed = SentinelURL.parse(url)
    # the Sentinels themselves take no password here (kombu's `sentinel_kwargs` does)
    sentinel_options = {"socket_timeout": options.get("socket_timeout") or 2.0}
    sentinel = Sentinel(list(parsed.sentinels), sentinel_kwargs=sentinel_options)
    client: redis.Redis = sentinel.master_for(
        master, redis_class=_sentinel_redis_class(), db=parsed.db, username=parsed.username,
        password=parsed.password, **options,
    )  # fmt: skip
    return client


def _cluster_for(parsed: ClusterURL, **options: Any) -> redis.Redis:
    import redis
    from redis.cluster import ClusterNode, RedisCluster

    try:  # it asks a node for the slots' masters now
        cluster = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in parsed.nodes],
            username=parsed.username, password=parsed.password, ssl=parsed.tls, **options,
        )  # fmt: skip
    except redis.exceptions.RedisClusterException as exc:  # no RedisError: say it as one
        raise redis.ConnectionError(f"Redis Cluster unreachable: {exc}") from None
    # it serves every command newsq's state sends (keys of one call on one slot), though
    # it is no subclass of redis.Redis
    return cast("redis.Redis", cluster)


@cache
def _sentinel_redis_class() -> type[redis.Redis]:
    import redis

    class _SentinelRedis(redis.Redis):
        """The master's client; closing it closes its connections to the Sentinels too."""

        def close(self) -> None:
            super().close()
            manager = getattr(self.connection_pool, "sentinel_manager", None)
            if manager is not None:
                manager.close()

    return _SentinelRedis


def state_url(settings: Settings) -> str | None:
    """The shared state's Redis URL: ``NEWSQ_STATE_URL``, else the broker's."""
    return settings.state_url or settings.broker_url


def state_redis(settings: Settings, **options: Any) -> redis.Redis:
    """A client of the shared state's Redis (see the module docstring). A ``redis://``
    ``NEWSQ_STATE_URL`` that names a node of a Redis Cluster gives a cluster client too."""
    url = state_url(settings)
    if not url:
        raise ConfigError("the shared state needs NEWSQ_BROKER_URL (a redis:// URL)")
    if settings.state_url and _cluster_node(url):
        return _cluster_for(ClusterURL.of_node(url), **options)
    return redis_for(url, settings.sentinel_master, **options)


_NODES: dict[str, bool] = {}  # URL -> whether it is a cluster node, as a server answered


def _cluster_node(url: str) -> bool:
    """Whether the server at a ``redis://`` URL of database 0 runs in cluster mode
    (``INFO cluster``, asked once a process); False when it cannot be asked now."""
    import redis

    plain = url.startswith(("redis://", "rediss://"))
    if not plain or urlsplit(url).path.strip("/") not in ("", "0"):  # a cluster has db 0
        return False
    if url not in _NODES:
        client = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        try:
            _NODES[url] = int(client.info("cluster").get("cluster_enabled", 0)) == 1
        except redis.RedisError:  # unreachable: the plain client says so when used
            return False
        finally:
            client.close()
    return _NODES[url]


def broker_redis(settings: Settings, **options: Any) -> redis.Redis:
    """A client of the broker's Redis, for what newsq reads of Celery's own keys (queue
    lengths, messages taken): Celery and kombu make their own connections."""
    if not settings.broker_url:
        raise ConfigError("the broker needs NEWSQ_BROKER_URL (a redis:// URL)")
    return redis_for(settings.broker_url, settings.sentinel_master, **options)


ScriptCall = tuple[Sequence[str], Sequence[Any]]
"""One call of a script: its KEYS (all on one slot, the first routes it) and its ARGV."""


def is_cluster(client: object) -> bool:
    """Whether ``client`` is a Redis Cluster's (from a ``redis+cluster://`` URL)."""
    from redis.cluster import RedisCluster

    return isinstance(client, RedisCluster)


def run_script(client: redis.Redis, script: Script, calls: Sequence[ScriptCall]) -> list[Any]:
    """``script`` once per call, in one round trip per server (a Redis Cluster's calls
    go to each master in a pipeline of that master's own: redis-py's cluster pipeline
    refuses scripts). Results in the order of ``calls``; a call's error is raised."""
    from collections import defaultdict

    if not calls:
        return []
    if not is_cluster(client):
        return _pipelined(client, script, list(enumerate(calls)), client)[1]
    cluster: Any = client
    by_node: dict[str, list[tuple[int, ScriptCall]]] = defaultdict(list)
    nodes: dict[str, Any] = {}
    for i, call in enumerate(calls):
        node = cluster.get_node_from_key(call[0][0])
        nodes[node.name] = node
        by_node[node.name].append((i, call))
    out: list[Any] = [None] * len(calls)
    for name, items in by_node.items():
        indexes, results = _pipelined(nodes[name].redis_connection, script, items, client)
        for i, result in zip(indexes, results, strict=True):
            out[i] = result
    return out


def _pipelined(server: redis.Redis, script: Script, items: list[tuple[int, ScriptCall]],
               client: redis.Redis) -> tuple[list[int], list[Any]]:  # fmt: skip
    """EVALSHA of each item in one pipeline to ``server``; a call the server does not
    take there (its script not loaded yet, its slot moved) goes again one by one through
    ``client``, which loads the script and follows the cluster's redirects."""
    import redis

    pipe = server.pipeline(transaction=False)
    for _, (keys, args) in items:
        pipe.evalsha(script.sha, len(keys), *keys, *args)
    results = pipe.execute(raise_on_error=False)
    for j, result in enumerate(results):
        if isinstance(result, redis.exceptions.NoScriptError | redis.exceptions.AskError):
            keys, args = items[j][1]
            results[j] = script(keys=keys, args=args, client=client)
        elif isinstance(result, Exception):
            raise result
    return [i for i, _ in items], results
