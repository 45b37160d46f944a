"""Errors and reason codes.

Expected outcomes (a 404, a page with no article, a duplicate) are *results* carrying a
reason code; they are counted, never raised. Exceptions are kept for what stops a
stage from producing a result at all::

    NewsqError
     ├── ConfigError            bad setting or argument: permanent, shown to the user
     └── Retryable              try again later, with backoff
          └── StoreUnavailable  the database did not answer

Fetch outcomes map onto the contract's reason codes; ``RETRYABLE_REASONS`` says which
of them are worth another attempt (timeouts, 429/5xx, lost connections).
"""

from __future__ import annotations

from typing import Final


class NewsqError(Exception):
    """Root of every error newsq raises on purpose."""


class ConfigError(NewsqError):
    """A setting, argument or input file is wrong; the message says which."""


class Retryable(NewsqError):
    """A transient failure: the same work may succeed later."""


class StoreUnavailable(Retryable):
    """The backing store could not be reached or was locked."""


# Reason codes of the contract, for fetch results and for failed or skipped URLs.
INVALID_URL: Final = "invalid_url"
BLOCKED_ADDRESS: Final = "blocked_address"
ROBOTS_DISALLOWED: Final = "robots_disallowed"
TIMEOUT: Final = "timeout"
CONNECTION_ERROR: Final = "connection_error"
TOO_MANY_REDIRECTS: Final = "too_many_redirects"
HTTP_ERROR: Final = "http_error"
TOO_LARGE: Final = "too_large"
BAD_CONTENT_TYPE: Final = "bad_content_type"
DECODE_ERROR: Final = "decode_error"
NO_CONTENT: Final = "no_content"
POISON: Final = "poison"
RATE_LIMITED: Final = "rate_limited"  # in the contract's list; no fetch outcome gives it now
TOO_COMPLEX: Final = "too_complex"  # a page over the clean stage's bounds (newsq.clean.limits)
REVISIT: Final = "revisit"  # a WARC revisit record: a capture with no body (newsq backfill)

REASONS: Final = frozenset({
    INVALID_URL, BLOCKED_ADDRESS, ROBOTS_DISALLOWED, RATE_LIMITED, TIMEOUT, CONNECTION_ERROR,
    TOO_MANY_REDIRECTS, HTTP_ERROR, TOO_LARGE, BAD_CONTENT_TYPE, DECODE_ERROR, NO_CONTENT,
    POISON, TOO_COMPLEX, REVISIT,
})  # fmt: skip
"""The reason codes a failed or skipped URL can carry (the contract's list)."""

DISCOVERY_LIMIT: Final = "discovery_limit"
"""Not a URL's reason: a feed or sitemap whose discovery stopped at one of its bounds
(``NEWSQ_DISCOVERY_*``, or ``newsq run --timeout``); the URLs found until then go on."""

# Outcomes worth another attempt. An http_error is retryable only for 429 and 5xx,
# which the fetch result tells by its status.
RETRYABLE_REASONS: Final = frozenset({TIMEOUT, CONNECTION_ERROR})
SKIP_REASONS: Final = frozenset({
    ROBOTS_DISALLOWED, BAD_CONTENT_TYPE, NO_CONTENT, TOO_COMPLEX, REVISIT,
})  # fmt: skip
"""Reasons that end a URL as ``skipped`` (a policy or content outcome, not a failure)."""
