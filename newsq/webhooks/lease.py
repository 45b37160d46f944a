"""One holder at a time per deployment: a Redis lease (``SET NX PX``), renewed by its
holder, taken by another process once it lapses (its holder died or hung)."""

from __future__ import annotations

import os
import socket
import uuid

import redis

# only the holder's token renews or deletes the key: a holder whose lease lapsed and
# was taken by another cannot extend or end the new holder's
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


class Lease:
    """The lease at ``key``, ``ttl`` seconds long unless renewed."""

    def __init__(self, client: redis.Redis, key: str, ttl: float) -> None:
        self.client = client
        self.key = key
        self.ttl_ms = max(1, round(ttl * 1000))
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def acquire(self) -> bool:
        """True when this process holds the lease now (taken, or renewed)."""
        if self.client.set(self.key, self.token, nx=True, px=self.ttl_ms):
            return True
        return self.renew()

    def renew(self) -> bool:
        """Extend the lease by its ttl; False when another holds it (or nobody does)."""
        return bool(self._renew(keys=[self.key], args=[self.token, self.ttl_ms]))

    def release(self) -> None:
        """Give the lease up, if it is still ours: another may take it at once."""
        self._release(keys=[self.key], args=[self.token])

    def holder(self) -> str | None:
        """The token of the process holding the lease, None when nobody does."""
        value = self.client.get(self.key)
        return value.decode() if isinstance(value, bytes) else value
