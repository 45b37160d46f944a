"""The webhook's settings, the part of :class:`~newsq.config.settings.Settings` it needs."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from newsq.config.settings import AllowPrivate, Settings

SIGNATURE_HEADER = "X-Newsq-Signature"
"""``sha256=<hex>``: HMAC-SHA256 of the exact body, keyed with ``NEWSQ_WEBHOOK_SECRET``."""
EVENT_ID_HEADER = "X-Newsq-Event-Id"
"""The event's id (also the body's ``id``): a receiver dedups on it."""
EVENT_KIND_HEADER = "X-Newsq-Event-Kind"


@dataclass(frozen=True)
class WebhookConfig:
    """Where events go, how they are signed, retried and handed between workers."""

    url: str
    secret: str
    allow: AllowPrivate
    timeout: float = 10.0
    backoff_max: float = 60.0
    lease: float = 10.0
    drain: float = 30.0
    concurrency: int = 1
    """Stories sent at once (1: every event in id order)."""
    key_prefix: str = "newsq"
    user_agent: str = "newsq"

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookConfig | None:
        """The webhook of ``settings``; None when ``NEWSQ_WEBHOOK_URL`` is unset."""
        if not settings.webhook_url:
            return None
        return cls(url=settings.webhook_url, secret=settings.webhook_secret or "",
                   allow=settings.webhook_allow, timeout=settings.webhook_timeout,
                   backoff_max=settings.webhook_backoff_max, lease=settings.webhook_lease,
                   drain=settings.webhook_drain, concurrency=settings.webhook_concurrency,
                   key_prefix=settings.key_prefix,
                   user_agent=settings.user_agent)  # fmt: skip

    @property
    def target(self) -> str:
        """The URL without its user, password and query (which may hold a token): the
        key of its cursor in the store, and how logs and ``newsq stats`` name it."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path or '/'}"

    @property
    def lease_key(self) -> str:
        return f"{self.key_prefix}:webhook:lease"
