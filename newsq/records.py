"""The typed records that cross stage boundaries.

Each is a frozen dataclass; only their JSON forms travel on the broker.
"""

from __future__ import annotations

import builtins
from dataclasses import asdict, dataclass, field
from typing import Any

from newsq import errors

# URL states (contract). Terminal ones end a URL's life.
QUEUED = "queued"
FETCHING = "fetching"
FETCHED = "fetched"
STORED = "stored"
DUPLICATE = "duplicate"
SKIPPED = "skipped"
FAILED = "failed"
STATES = (QUEUED, FETCHING, FETCHED, STORED, DUPLICATE, SKIPPED, FAILED)
TERMINAL = frozenset({STORED, DUPLICATE, SKIPPED, FAILED})


@dataclass(frozen=True)
class FetchResult:
    """What one fetch produced. ``ok`` False carries a contract reason code."""

    url: str
    final_url: str
    ok: bool
    status: int | None
    reason: str | None
    content_type: str | None
    bytes: int
    elapsed_ms: int
    redirects: int
    text: str | None = field(default=None, repr=False)
    """The decoded body (pages) when ok."""
    body: builtins.bytes | None = field(default=None, repr=False)
    """The raw body, kept for feeds and robots.txt, which parse bytes themselves."""
    retry_after: float | None = None
    """Seconds the server asked us to wait (Retry-After on 429/503), if any."""
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    raw: tuple[str, builtins.bytes] | None = field(default=None, repr=False)
    """A page's HTTP head and body as fetched (``NEWSQ_KEEP_RAW=1``): for a replayable
    WARC record (``newsq.store.warc``)."""

    @property
    def retryable(self) -> bool:
        """True when another attempt later may succeed (timeouts, 429, 5xx, resets)."""
        if self.ok:
            return False
        if self.reason in errors.RETRYABLE_REASONS:
            return True
        return (
            self.reason == errors.HTTP_ERROR
            and self.status is not None
            and (self.status == 429 or self.status >= 500)
        )

    def to_json(self) -> dict[str, Any]:
        """The contract's fields of ``newsq fetch``."""
        return {
            "url": self.url,
            "final_url": self.final_url,
            "ok": self.ok,
            "status": self.status,
            "reason": self.reason,
            "content_type": self.content_type,
            "bytes": self.bytes,
            "elapsed_ms": self.elapsed_ms,
            "redirects": self.redirects,
        }


@dataclass(frozen=True)
class Article:
    """The clean stage's output: main text and metadata of one page."""

    title: str | None
    author: str | None
    published: str | None  # ISO 8601 date or datetime
    language: str | None
    site: str | None
    canonical_url: str | None
    text: str
    paywalled: bool | None = None
    """The page's JSON-LD says it is not free to read (True), is (False), or nothing."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Drop:
    """An expected outcome that ends a page without an article: a reason code, counted."""

    reason: str
    detail: str = ""


@dataclass(frozen=True)
class Verdict:
    """The dedup stage's decision for one copy.

    ``kind`` is ``new`` for the first copy of a story, else how it matched:
    ``url`` (same URL, final or canonical URL), ``exact`` (same normalised text),
    ``near`` (MinHash similarity or containment), ``revision`` (same URL, new text).
    """

    story_id: str
    kind: str
    duplicate_of: str | None = None
    similarity: float = 1.0

    @property
    def is_duplicate(self) -> bool:
        return self.duplicate_of is not None and self.kind != "revision"
