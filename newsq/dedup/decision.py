"""The dedup decision made in the worker, as ``dedup.lua`` makes it in Redis.

:meth:`DedupIndex.decide <newsq.dedup.index.DedupIndex.decide>` reads the live
generations' tables with plain pipelined HMGETs (:func:`table_reads`), the doc records
they point at (:func:`doc_reads`), decides here (:func:`plan`), and writes with
``commit.lua``, which first checks that nothing it read in the table it writes changed
(:func:`checks`). Steps and records are ``dedup.lua``'s, in the same order: both must
give the same verdict and write the same entries (tests/test_dedup_decision.py). In
Redis, the Lua work of a decide (unpacking fields, comparing signatures) was ~75 % of
its CPU; here it is the worker's.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from newsq.dedup.config import DedupConfig
from newsq.records import Verdict

REC = 13  # a packed entry: digest (8 bytes), docid (5)
NAMES = {b"n": "new", b"u": "url", b"e": "exact", b"m": "near", b"r": "revision"}


@dataclass(frozen=True)
class Copy:
    """One copy's digests and sketch, as ``dedup.lua``'s ARGV carries them."""

    gen: int
    expire_at: int
    url: str
    story_new: bytes  # 8 bytes
    url_f: bytes
    final_f: bytes  # b"" for none
    canon_f: bytes
    text_f: bytes
    th: bytes  # the text hash's first 8 hex digits
    nsh: int
    sig: bytes  # 2 bytes a value
    bands: tuple[bytes, ...]  # the full signature's, then the lead's
    n_lead: int
    age: float  # seconds since its generation began

    @property
    def direct(self) -> list[bytes]:
        """The url fields looked up, in order."""
        return [f for f in (self.url_f, self.final_f, self.canon_f) if f]

    @property
    def packed(self) -> list[bytes]:
        """The text and band digests looked up, in order."""
        return [self.text_f, *self.bands] if self.text_f else list(self.bands)


def bucket_of(digest: bytes, config: DedupConfig) -> bytes:
    """The table field packing ``digest``'s entry (decimal, of its bytes 1-3)."""
    return str(int.from_bytes(digest[:3], "big") % config.table_buckets).encode()


def unpack_id(packed: bytes, digest: bytes) -> bytes | None:
    """The docid (decimal) of ``digest`` in packed entries, or None."""
    i = packed.find(digest)
    while i >= 0:
        if i % REC == 0:
            return str(int.from_bytes(packed[i + 8 : i + REC], "big")).encode()
        i = packed.find(digest, i + 1)
    return None


@dataclass
class Read:
    """What the tables held for one copy: every field's newest value, and the table of
    the copy's generation as read (for the commit's check)."""

    found: dict[bytes, tuple[bytes, int]]  # field -> (value, generation)
    tables: dict[int, tuple[dict[bytes, bytes | None], dict[bytes, bytes | None]]]
    expiring: bool


def table_fields(copy: Copy, config: DedupConfig) -> tuple[list[bytes], list[bytes]]:
    """The url fields and the packed fields (bucket names, once each) a decide reads."""
    names: list[bytes] = []
    for f in copy.packed:
        b = bucket_of(f, config)
        if b not in names:
            names.append(b)
    return copy.direct, names


def read(copy: Copy, config: DedupConfig, replies: Sequence[Sequence[bytes | None]]) -> Read:
    """The :class:`Read` of the HMGET replies of generations ``gen`` .. ``gen - G`` of
    ``table_fields`` (and ``x``), newest first: the first value found wins."""
    direct, names = table_fields(copy, config)
    found: dict[bytes, tuple[bytes, int]] = {}
    tables = {}
    expiring = False
    for g, got in zip(range(copy.gen, copy.gen - config.generations - 1, -1), replies, strict=True):
        urls = dict(zip(direct, got[: len(direct)], strict=True))
        entries = dict(zip(names, got[len(direct) : len(direct) + len(names)], strict=True))
        tables[g] = (urls, entries)
        if g == copy.gen:
            expiring = got[-1] == str(copy.expire_at).encode()
        for f, v in urls.items():
            if v and f not in found:
                found[f] = (v, g)
        for f in copy.packed:
            s = entries[bucket_of(f, config)]
            if s and f not in found:
                docid = unpack_id(s, f)
                if docid is not None:
                    found[f] = (docid, g)
    return Read(found, tables, expiring)


def doc_requests(copy: Copy, got: Read) -> dict[bytes, int]:
    """The doc records a decide may read: docid -> the newest generation to look in."""
    wanted: dict[bytes, int] = {}

    def want(docid: bytes, g: int) -> None:
        wanted[docid] = max(g, wanted.get(docid, g))

    for f in copy.direct:
        if f in got.found:
            rec, g = got.found[f]
            want(rec[14:], g)
    for f in copy.packed:
        if f in got.found:
            want(*got.found[f])
    return wanted


def doc_reads(
    copy: Copy, config: DedupConfig, wanted: dict[bytes, int]
) -> list[tuple[int, list[bytes]]]:
    """Per generation, the doc fields to HMGET (generations with none left out)."""
    out = []
    for g in range(copy.gen, copy.gen - config.generations - 1, -1):
        ids = [docid for docid, newest in wanted.items() if newest >= g]
        if ids:
            out.append((g, ids))
    return out


@dataclass
class Plan:
    """A decide's verdict and what it writes (nothing: a replay)."""

    verdict: Verdict
    doc: bytes = b""  # the new doc record (b"" for none)
    ref: bytes = b""  # the url records' doc id (b"" for the new doc's)
    urls: list[tuple[bytes, bytes]] = field(default_factory=list)  # field, record sans id
    packed: dict[bytes, list[bytes]] = field(default_factory=dict)  # bucket -> digests


def plan(copy: Copy, config: DedupConfig, got: Read,
         docs: Callable[[bytes, int], bytes | None]) -> Plan:  # fmt: skip
    """``dedup.lua``'s steps 1-5 on what was read (see that script for each step)."""
    K = len(copy.sig) // 2
    nsh = copy.nsh
    sig = np.frombuffer(copy.sig, dtype=">u2").astype(np.int32)
    found = dict(got.found)
    out = Plan(Verdict(story_id="", kind="new", duplicate_of=None, similarity=1.0))

    def find(f: bytes) -> tuple[bytes | None, int]:
        v = found.get(f) if f else None
        return v if v else (None, 0)

    def doc(docid: bytes | None, g: int | None = None) -> bytes | None:
        return docs(docid, copy.gen if g is None else g) if docid is not None else None

    def d_nsh(d: bytes) -> int:
        return int.from_bytes(d[8:12], "big")

    def compare(d: bytes) -> tuple[float, float, int, float | None]:
        cs, cn = d[12 : 12 + 2 * K], d_nsh(d)
        if K == 0 or len(cs) != 2 * K or nsh == 0 or cn == 0:
            return 0.0, 0.0, 0, None
        other = np.frombuffer(cs, dtype=">u2").astype(np.int32)
        m = int(np.count_nonzero(sig == other))
        q_lt = int(np.count_nonzero(sig < other))
        c_lt = K - m - q_lt
        j = m / K
        small_n, small_lt = (cn, c_lt) if cn < nsh else (nsh, q_lt)
        if small_n < config.min_shingles:
            return j, 0.0, small_n, None
        contain = 1 - (small_lt / K) * (nsh + cn) / (1 + j) / small_n
        return j, max(contain, 0.0), small_n, K * small_n * (1 + j) / (nsh + cn)

    def near_score(d: bytes, lead_hits: int) -> float | None:
        j, contain, small_n, lower = compare(d)
        if lower is not None and lower < config.min_lower and lead_hits < copy.n_lead:
            contain = 0.0
        long = small_n >= config.long_shingles
        if j >= config.jaccard and (long or j >= config.short_jaccard):
            return j
        if contain >= config.containment:
            return contain
        if long and contain >= config.long_containment and j >= config.long_jaccard:
            return contain
        return None

    def permille(x: float) -> bytes:
        return b"%04d" % math.floor(x * 1000 + 0.5)

    def verdict(kind: bytes, d: bytes, sim: bytes) -> Verdict:
        root = b"" if kind in (b"n", b"r") else d[12 + 2 * K :]
        return Verdict(story_id=d[:8].hex(), kind=NAMES[kind],
                       duplicate_of=root.decode() or None, similarity=int(sim) / 1000)  # fmt: skip

    def new_doc(story: bytes, root: bytes) -> None:
        out.doc = story + struct.pack(">I", nsh) + copy.sig + root

    def put_id(f: bytes) -> None:  # a packed entry of the new doc
        out.packed.setdefault(bucket_of(f, config), []).append(f)
        found[f] = (b"", copy.gen)  # found from now on (its id is the commit's)

    def index_bands() -> None:
        for f in copy.bands:
            if f not in found:
                put_id(f)

    # 1. the copy's own url seen before: a replay (same text) or a revision (new text)
    rec, rec_gen = find(copy.url_f)
    if rec and rec[:1] == b"o":
        d = doc(rec[14:], rec_gen)
        if d and rec[2:10] == copy.th:
            out.verdict = verdict(rec[1:2], d, rec[10:14])
            return out
        if d:
            sim = permille(compare(d)[0])
            new_doc(d[:8], d[12 + 2 * K :])
            if copy.text_f not in found:
                put_id(copy.text_f)
            index_bands()
            out.urls.append((copy.url_f, b"or" + copy.th + sim))
            out.verdict = verdict(b"r", d, sim)
            return out

    # 2. same url, final url or canonical url as an indexed copy, if the texts agree
    kind = match = match_id = sim_b = None
    aliases = [copy.url_f, copy.final_f, copy.canon_f]
    seen: list[bytes | None] = []
    for f in aliases:
        v, g = find(f)
        seen.append(v)
        if v and match is None:
            d = doc(v[14:], g)
            if d:
                s = 1.0 if v[2:10] == copy.th else near_score(d, 0)
                if s is not None or nsh == 0 or d_nsh(d) == 0:
                    kind, match, match_id, sim_b = b"u", d, v[14:], permille(s or 1)

    # 3. same normalised text
    text_ref, text_gen = find(copy.text_f)
    text_doc = doc(text_ref, text_gen) if text_ref else None
    if match is None and text_ref and text_doc:
        kind, match, match_id, sim_b = b"e", text_doc, text_ref, b"1000"

    # 4. near copy: candidates from the LSH bands, confirmed on their signatures
    if match is None and nsh > 0:
        ids: dict[bytes, list[int]] = {}  # id -> [generation, lead hits], first found first
        first_lead = len(copy.bands) - copy.n_lead
        for i, f in enumerate(copy.bands):
            docid, g = find(f)
            if docid:
                hit = ids.setdefault(docid, [g, 0])
                if i >= first_lead:
                    hit[1] += 1
        best = -1.0
        for docid, (g, lead_hits) in ids.items():
            d = doc(docid, g)
            if d:
                s = near_score(d, lead_hits)
                if s is not None and s > best:
                    kind, match, match_id, best = b"m", d, docid, s
        if match is not None:
            sim_b = permille(best)

    # 5. write: a text not seen before is indexed (doc record, text digest, bands)
    story, root = copy.story_new, copy.url.encode()
    if match is not None:
        story, root = match[:8], match[12 + 2 * K :]
    else:
        kind, sim_b = b"n", b"1000"
    assert kind is not None and sim_b is not None
    out.ref = match_id or b""
    if not text_doc:
        new_doc(story, root)
        out.ref = b""
        put_id(copy.text_f)
        index_bands()
    prefix = kind + copy.th + sim_b
    out.urls.append((copy.url_f, b"o" + prefix))
    for f, v in zip(aliases[1:], seen[1:], strict=True):
        if f and not v:
            out.urls.append((f, b"a" + prefix))
    if match is None:
        out.verdict = Verdict(story_id=story.hex(), kind="new", duplicate_of=None, similarity=1.0)
    else:
        out.verdict = verdict(kind, match, sim_b)
    return out


def checks(copy: Copy, config: DedupConfig, got: Read, g: int) -> list[bytes | int]:
    """The commit's check of generation ``g``'s table as read: its url fields' values
    and its packed fields' lengths, with this copy's digests in each."""
    urls, entries = got.tables[g]
    mine: dict[bytes, list[bytes]] = {}
    for f in copy.packed:
        mine.setdefault(bucket_of(f, config), []).append(f)
    out: list[bytes | int] = [len(urls), len(entries)]
    for f, v in urls.items():
        out += [f, v or b""]
    for b, s in entries.items():
        out += [b, len(s or b""), b"".join(mine[b])]
    return out
