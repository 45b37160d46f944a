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

Steps 1-5 are decided in the worker (:mod:`newsq.dedup.decision`) on what plain
pipelined HMGETs read, and written by one short script (``commit.lua``) that first
checks that nothing the decide read in the table it writes changed; if something did,
the worker reads and decides again. So two workers holding copies of one story at the
same instant cannot both get ``new``, and Redis does no Lua work but the check and the
write. A decide is two or three round trips (reads, doc records when something matched,
the commit). While a layout before is live, and after a few commits refused in a row,
``dedup.lua`` decides and writes in one atomic call, as every decide did before: both
give the same verdicts and write the same entries.

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
  generation (the field ``x`` says it is set): 9 commands for a new text. An
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
from newsq.dedup.decision import Copy, checks, doc_reads, doc_requests, plan, read, table_fields
from newsq.dedup.sketch import Sketch, sketch
from newsq.records import Verdict
from newsq.replies import text as reply_text
from newsq.urls import normalize_or_none

log = logging.getLogger(__name__)

_AMP_PARAMS = frozenset({"amp", "outputtype", "amp_js_v", "usqp"})
_AMP_SUFFIXES = ("/amp", ".amp", "/amp.html", "/amp/")

LEGACY_CHECK_SECONDS = 60.0
SCRIPT = resources.files("newsq.dedup").joinpath("dedup.lua").read_text(encoding="utf-8")
COMMIT = resources.files("newsq.dedup").joinpath("commit.lua").read_text(encoding="utf-8")
COMMIT_TRIES = 4  # then the atomic script: a copy's decide always ends
SKEW_SECONDS = 60.0  # the clock skew between workers a commit's check covers


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
        self.commit = redis_client.register_script(COMMIT)
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
        c = self.copy(url=url, final_url=final_url, canonical_url=canonical_url,
                      sk=sk or self.sketch(text))  # fmt: skip
        if not self.legacy():
            for _ in range(COMMIT_TRIES):
                decided = self.decide_here(c)
                if decided is not None:
                    log.debug("dedup %s: %s", url, decided.kind)
                    return decided
        # a layout before is live (only dedup.lua reads it), or this copy's fields kept
        # changing under it: the one atomic script
        args = self.script_args(c)
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
        return self.script_args(self.copy(url=url, final_url=final_url,
                                          canonical_url=canonical_url, sk=sk))  # fmt: skip

    def script_args(self, c: Copy) -> list[Any]:
        """``dedup.lua``'s ARGV for a :class:`Copy`."""
        return [
            c.gen, c.expire_at, c.url, c.story_new, c.url_f, c.final_f, c.canon_f,
            c.text_f, c.th, c.nsh, c.sig, self.legacy(), *c.bands,
        ]  # fmt: skip

    def copy(self, *, url: str, final_url: str, canonical_url: str | None, sk: Sketch) -> Copy:
        """One copy's digests, its generation now and its sketch."""
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
        return Copy(
            gen=gen, expire_at=expire_at, url=url, story_new=bytes.fromhex(story_id_for(url)),
            url_f=_digest(b"u", own), final_f=aliases[0], canon_f=aliases[1],
            text_f=_digest(b"t", sk.text_hash), th=sk.text_hash[:8].encode(),
            nsh=sk.shingles, sig=sk.packed_sig(), bands=(*sk.bands, *sk.lead_bands),
            n_lead=max(len(sk.bands) + len(sk.lead_bands) - config.bands, 0),
            age=now - gen * config.generation_seconds,
        )  # fmt: skip

    def table(self, gen: int) -> str:
        """The key of generation ``gen``'s table."""
        return f"{self.base}:b:{gen}"

    def decide_here(self, c: Copy) -> Verdict | None:
        """Decide in this process and commit (see :mod:`newsq.dedup.decision`); None when
        a field this copy read in its generation's table changed before the commit (the
        caller decides again)."""
        config, oldest = self.config, c.gen - self.config.generations
        direct, names = table_fields(c, config)
        fields = [*direct, *names, b"x"]
        pipe = self.redis.pipeline(transaction=False)
        for g in range(c.gen, oldest - 1, -1):
            pipe.hmget(self.table(g), fields)
        got = read(c, config, pipe.execute())
        values: dict[tuple[int, bytes], bytes] = {}
        wanted = doc_requests(c, got)
        if wanted:
            reads = doc_reads(c, config, wanted)
            pipe = self.redis.pipeline(transaction=False)
            for g, ids in reads:
                pipe.hmget(self.table(g), [b"d" + docid for docid in ids])
            for (g, ids), docs in zip(reads, pipe.execute(), strict=True):
                values.update(((g, docid), v) for docid, v in zip(ids, docs, strict=True) if v)

        def doc(docid: bytes, newest: int) -> bytes | None:
            for g in range(newest, oldest - 1, -1):
                if (g, docid) in values:
                    return values[g, docid]
            return None

        todo = plan(c, config, got, doc)
        if not todo.urls:  # a replay: the first verdict again, nothing to write
            return todo.verdict
        assert todo.doc or not todo.packed, "packed entries are the new doc's"
        checked = [c.gen]
        if c.age < SKEW_SECONDS:  # a worker whose clock lags may still write the one before
            checked.append(c.gen - 1)
        keys = [self.table(c.gen), f"{self.base}:seq", *(self.table(g) for g in checked[1:])]
        args: list[Any] = [c.expire_at, todo.doc, todo.ref, len(todo.urls), len(todo.packed)]
        for g in checked:
            args += checks(c, config, got, g)
        for f, record in todo.urls:
            args += [f, record]
        for b, digests in todo.packed.items():
            args += [b, b"".join(digests)]
        if reply_text(self.commit(keys=keys, args=args)) == "again":
            return None
        return todo.verdict


def parse_reply(reply: list[bytes | str]) -> Verdict:
    """The :class:`Verdict` of one script reply (from a client decoding replies or not)."""
    kind, story, duplicate_of, permille = (reply_text(v) for v in reply)
    return Verdict(
        story_id=story,
        kind=kind,
        duplicate_of=duplicate_of or None,
        similarity=int(permille) / 1000,
    )
