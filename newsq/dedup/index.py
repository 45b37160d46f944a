"""The dedup stage: every story once, with every outlet that carried it.

:meth:`DedupIndex.decide` files one copy of an article in an index shared by every
worker through Redis and says what it is (a :class:`~newsq.records.Verdict`):

1. the copy's own url seen before: a *replay* (same text: the first verdict again, so
   a redelivered task is idempotent) or a ``revision`` (new text, same story);
2. ``url``: its url, final url or canonical url is an indexed copy's (AMP pages,
   tracking parameters and redirects are folded by :func:`url_key`), and the texts
   agree;
3. ``exact``: the same normalised text (:func:`newsq.dedup.sketch.content_hash`);
4. ``near``: a MinHash candidate from the LSH bands whose estimated Jaccard similarity
   is >= ``jaccard`` (+ ``short_jaccard_margin`` for short texts), or whose smaller
   shingle set is >= ``containment`` contained in the larger (a copy trimmed to its
   first paragraphs), or, for long texts, >= ``long_containment`` contained with
   Jaccard >= ``long_jaccard`` (a trimmed copy whose page kept a few lines the other's
   extraction dropped);
5. else ``new``: the first copy of a story.

Steps 1-5 and the writes run in ONE Lua script (``newsq/dedup/dedup.lua``), one
EVALSHA: two workers holding copies of one story at the same instant cannot both get
``new``. A decide is one round trip (two after a Redis restart lost the script).

Every parameter of the decision is a field of :class:`~newsq.dedup.config.DedupConfig`,
made from the settings (``NEWSQ_DEDUP_*``); the script gets them by name, written into
its text (:func:`script_for`).

Layout and limits:

- Every key carries the hash tag ``{<prefix>:dedup}``, so in Redis Cluster the whole
  index lives on one shard. That is deliberate: a new copy must be checked against
  every story in one atomic step, and a copy's story is not known before the check,
  so there is nothing to shard by. ``bench.dedup_index_bench`` measures what one
  shard holds per GB and spends per decide (``bench/README.md``). Beyond that, run
  one index per language or region (a key_prefix each): copies rarely cross those
  lines.
- Time is cut into generations of ``window / generations``; each generation's keys
  expire a full window after it ends, and lookups read the live generations only. So
  an entry is remembered for at least ``dedup_window_days`` and at most
  ``1 + 1/generations`` of it, and memory is bounded by the window.
- The entries of a generation (url, text and band digests, and each new text's doc
  record: its story, shingle count, signature and first url) are fields of one hash,
  its table (``<base>:b:<gen>``): a decide reads every field it may match with one
  HMGET per live generation and writes what it adds with one HSET, its EXPIREAT once a
  generation (the field ``x`` says it is set): 8 commands for a new text. An
  article's text and band entries (25 of its ~26) are packed ``table_fill`` to a field
  (13 bytes each, the field picked by the digest), so they cost ~14 bytes each instead
  of a full hash's ~60 (no compact listpack encoding at this size) and a decide still
  reads one HMGET per generation. Deleting an expired
  generation frees its table at once; set ``lazyfree-lazy-expire yes`` on a Redis of
  your own (newsq's own Redis does) so that happens in the background.
- The layouts before are still read while a live generation holds some of them: doc
  records in hashes of their own (``<base>:d:<gen>:<docid % doc_buckets>``), the
  table of one field per entry (``<base>:t:<gen>``), and small hashes by digest
  (``<base>:k:<gen>:<bucket>``) with a filter per generation (``<base>:f:<gen>``, of
  ``filter_bits_per_article``). The index looks for them once a minute
  (:meth:`DedupIndex.legacy`) and the script reads them as those versions wrote them,
  so copies indexed before an upgrade are still found for the rest of their window.
  Nothing writes them any more.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import redis

from newsq.config.settings import Settings
from newsq.dedup.config import DedupConfig
from newsq.dedup.sketch import Sketch, sketch
from newsq.records import Verdict
from newsq.replies import text as reply_text
from newsq.urls import normalize_or_none

log = logging.getLogger(__name__)

_AMP_PARAMS = frozenset({"amp", "outputtype", "amp_js_v", "usqp"})
_AMP_SUFFIXES = ("/amp", ".amp", "/amp.html", "/amp/")

LEGACY_CHECK_SECONDS = 60.0
SCRIPT = resources.files("newsq.dedup").joinpath("dedup.lua").read_text(encoding="utf-8")


def script_for(config: DedupConfig) -> str:
    """``dedup.lua`` with ``config``'s parameters written into it: a Lua table made once,
    not a JSON argument decoded on every call (~5 % of a decide, 300 bytes sent)."""
    return f"local PARAMS = {config.lua_table()}\n{SCRIPT}"


def url_key(url: str | None) -> str | None:
    """One spelling for the pages that are the same page, or None for no usable URL.

    Beyond :func:`newsq.urls.normalize` (tracking parameters, case, ports): the scheme,
    ``www.``/``m.``/``amp.`` host prefixes, AMP path suffixes and parameters and a
    trailing slash are dropped. A site's home page (a broken canonical link on every
    article of some sites) gives None, so it never merges articles.
    """
    normal = normalize_or_none(url)
    if normal is None:
        return None
    parts = urlsplit(normal)
    host = parts.netloc
    for prefix in ("www.", "amp.", "m."):
        if host.startswith(prefix):
            host = host[len(prefix) :]
            break
    path = parts.path
    for suffix in _AMP_SUFFIXES:
        if path.endswith(suffix):
            path = path[: -len(suffix)]
            break
    path = path.rstrip("/")
    if not path:
        return None
    query = [(k, v) for k, v in parse_qsl(parts.query, True) if k.lower() not in _AMP_PARAMS]
    return f"{host}{path}" + (f"?{urlencode(query)}" if query else "")


def _digest(tag: bytes, value: str) -> bytes:
    return hashlib.blake2b(tag + value.encode(), digest_size=8).digest()


def story_id_for(url: str) -> str:
    """The story id a story gets from its first copy's url (16 hex digits)."""
    return _digest(b"s", url).hex()


class DedupIndex:
    """The shared dedup index (see the module docstring). One per worker process."""

    def __init__(
        self,
        redis_client: redis.Redis,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis_client
        self.settings = settings
        self.config = DedupConfig.from_settings(settings)
        self.clock = clock
        self.base = f"{{{settings.key_prefix}:dedup}}"
        self.script = script_for(self.config)
        self.sha: str = redis_client.script_load(self.script)
        self._legacy: tuple[float, str] = (-math.inf, "")  # (checked at, found)

    def legacy(self) -> str:
        """The layouts before that a live generation holds: "t" for tables of one field
        per entry, "k" for small hashes and filters, "d" for doc records in hashes of
        their own ("" for none; looked up at most once a minute: those layouts are only
        ever read, so they only go)."""
        checked, found = self._legacy
        now = self.clock()
        if now - checked < LEGACY_CHECK_SECONDS:
            return found
        gen = int(now // self.config.generation_seconds)
        live = range(gen, gen - self.config.generations - 1, -1)
        docs = range(self.config.doc_buckets)
        kinds = {
            "t": [f"{self.base}:t:{g}" for g in live],
            "k": [f"{self.base}:f:{g}" for g in live],
            "d": [f"{self.base}:d:{g}:{b}" for g in live for b in docs],
        }
        found = "".join(layout for layout, keys in kinds.items() if self.redis.exists(*keys))
        self._legacy = (now, found)
        return found

    def sketch(self, text: str) -> Sketch:
        """The sketch of ``text`` with this index's parameters (for :meth:`decide`)."""
        return sketch(text, self.config)

    def decide(
        self,
        *,
        url: str,
        final_url: str,
        canonical_url: str | None,
        text: str,
        site: str | None,
        title: str | None = None,
        sk: Sketch | None = None,
    ) -> Verdict:
        """File this copy in the index and say what it is; the same call twice agrees.

        Raises ``redis.RedisError`` when Redis cannot be reached (the caller retries:
        nothing is half-written, the script is atomic). ``sk``: the text's sketch, when
        the caller made it already (by :meth:`sketch`; its ``text_hash`` is the stored
        content hash).
        """
        args = self.arguments(url=url, final_url=final_url, canonical_url=canonical_url,
                              sk=sk or self.sketch(text))  # fmt: skip
        try:
            reply = self.redis.evalsha(self.sha, 1, self.base, *args)
        except redis.exceptions.NoScriptError:
            self.sha = self.redis.script_load(self.script)
            reply = self.redis.evalsha(self.sha, 1, self.base, *args)
        verdict = parse_reply(reply)
        log.debug("dedup %s: %s %s", url, verdict.kind, verdict.duplicate_of or "")
        return verdict

    def arguments(
        self, *, url: str, final_url: str, canonical_url: str | None, sk: Sketch
    ) -> list[Any]:
        """The script's ARGV for one copy (also used by bulk loads in pipelines)."""
        config = self.config
        if sk.sig.size != config.hashes or len(sk.bands) not in (0, config.bands):
            raise ValueError("the sketch was made with another DedupConfig")
        now = self.clock()
        gen = int(now // config.generation_seconds)
        expire_at = math.ceil((gen + 1) * config.generation_seconds + config.window_seconds)
        own_key = url_key(url)
        own = own_key or url
        keys = {own}
        aliases = []
        for other in (final_url, canonical_url):
            k = own_key if other == url else url_key(other)  # usually final_url == url
            aliases.append(_digest(b"u", k) if k and k not in keys else b"")
            if k:
                keys.add(k)
        return [
            gen, expire_at, url, bytes.fromhex(story_id_for(url)),
            _digest(b"u", own), *aliases, _digest(b"t", sk.text_hash), sk.text_hash[:8],
            sk.shingles, sk.packed_sig(), self.legacy(), *sk.bands,
            *sk.lead_bands,
        ]  # fmt: skip


def parse_reply(reply: list[bytes | str]) -> Verdict:
    """The :class:`Verdict` of one script reply (from a client decoding replies or not)."""
    kind, story, duplicate_of, permille = (reply_text(v) for v in reply)
    return Verdict(
        story_id=story,
        kind=kind,
        duplicate_of=duplicate_of or None,
        similarity=int(permille) / 1000,
    )
