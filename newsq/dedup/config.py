"""Every parameter of the near-duplicate decision, in one object: :class:`DedupConfig`."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from newsq.config.settings import Settings

SHINGLE_MAX = 5
"""Longest shingle the sketch can hash (it has a multiplier per word position)."""


@dataclass(frozen=True, kw_only=True)
class DedupConfig:
    """The sketch, the LSH bands, the thresholds and the index's sizes.

    Built from settings by :meth:`from_settings` only. The fields with defaults are
    fixed: changing a sketch field changes every hash, and a layout field the Redis
    keys, of an index already in use. :meth:`lua_params` is what ``dedup.lua`` gets.
    """

    # from settings (NEWSQ_DEDUP_*)
    jaccard: float  # a near copy's estimated Jaccard similarity, at least
    containment: float  # or the share of the smaller shingle set in the larger, at least
    window_days: float  # an entry is remembered this long (up to 1 + 1/generations of it)
    capacity: int  # articles expected per window: sizes the buckets and the filters

    # the sketch (sketch.py)
    shingle: int = 3  # words per shingle; measured against 4 and 5 in bench.dedup_index_bench
    hashes: int = 64  # MinHash values per signature (K)
    bands: int = 21  # LSH bands of the full signature...
    rows: int = 3  # ...of this many values each (the first bands * rows values)
    lead_words: int = 30  # the lead: about a story's first paragraph, kept by trimmed copies
    lead_bands: int = 3  # LSH bands of the lead's own MinHash...
    lead_rows: int = 3  # ...of this many values each
    seed: int = 0x6E657773  # of the MinHash permutations: every worker must use the same

    # the decision (dedup.lua). The short margin: the 64-value estimate is coarse (about
    # ±0.06) and short pieces of one kind (local briefs) share much phrasing (0.48 on
    # different news, 0.62+ for short copies of one story). The long pair: a copy trimmed
    # to its lead whose page kept lines the other's extraction dropped (inline related
    # links, a dateline) is 0.7-0.75 contained; unrelated long texts stay under 0.05.
    min_shingles: int = 20  # a smaller text than this matches by Jaccard, never containment
    long_shingles: int = 100  # a pair whose smaller text has fewer shingles is *short*...
    short_jaccard_margin: float = 0.1  # ...and needs Jaccard >= jaccard + this
    long_containment: float = 0.65  # a long pair also matches on this containment...
    long_jaccard: float = 0.3  # ...with this Jaccard (a trimmed copy with a few lines more)
    min_lower: int = 4  # under this many lower values containment can't tell (near_score)

    # the index's layout in Redis (index.py)
    generations: int = 4  # per window; lookups read generations + 1 of them
    doc_buckets: int = 64  # doc-record hashes per generation of the layout before (read)
    entries_per_article: int = 20  # small entries (url, text, bands) an article puts
    bucket_fill: int = 80  # target entries per small hash: under listpack's 128
    filter_bits_per_article: int = 256  # of a generation's filter (~26 fields: ~10% false hits)
    table_fill: int = 16  # packed text and band entries per field of a generation's table

    def __post_init__(self) -> None:
        if not 1 <= self.shingle <= SHINGLE_MAX:
            raise ValueError(f"shingle must be 1..{SHINGLE_MAX}, not {self.shingle}")
        for bands, rows in ((self.bands, self.rows), (self.lead_bands, self.lead_rows)):
            if not (0 < bands < 256 and rows > 0 and bands * rows <= self.hashes):
                raise ValueError(f"{bands} bands of {rows} rows need <= {self.hashes} hashes")

    @classmethod
    def from_settings(cls, settings: Settings) -> DedupConfig:
        """The one place a :class:`DedupConfig` is made from settings."""
        return cls(
            jaccard=settings.dedup_jaccard,
            containment=settings.dedup_containment,
            window_days=settings.dedup_window_days,
            capacity=settings.dedup_capacity,
        )

    @property
    def window_seconds(self) -> float:
        return self.window_days * 86400.0

    @property
    def generation_seconds(self) -> float:
        return self.window_seconds / self.generations

    @property
    def buckets(self) -> int:
        """Small hashes per generation, for ``capacity`` articles per window."""
        per_generation = self.capacity * self.entries_per_article / self.generations
        return max(1, math.ceil(per_generation / self.bucket_fill))

    @property
    def table_buckets(self) -> int:
        """Fields of packed entries per generation's table, for ``capacity`` articles per
        window: ``table_fill`` entries each (its text and bands: an article's 25)."""
        per_generation = self.capacity * (1 + self.bands + self.lead_bands) / self.generations
        return min(9_999_999, max(1, math.ceil(per_generation / self.table_fill)))

    @property
    def filter_bits(self) -> int:
        """Bits of a generation's filter (32 bytes per article at capacity)."""
        return math.ceil(self.capacity * self.filter_bits_per_article / self.generations)

    @property
    def short_jaccard(self) -> float:
        return self.jaccard + self.short_jaccard_margin

    def lua_table(self) -> str:
        """:meth:`lua_params` as a Lua table constructor, for the script's text."""
        params = json.loads(self.lua_params())
        return "{" + ", ".join(f"{name} = {value!r}" for name, value in params.items()) + "}"

    def lua_params(self) -> str:
        """The parameters ``dedup.lua`` reads, by name: one JSON object (see its header)."""
        return json.dumps(
            {
                "generations": self.generations,
                "buckets": self.buckets,
                "table_buckets": self.table_buckets,
                "doc_buckets": self.doc_buckets,
                "filter_bits": self.filter_bits,
                "bands": self.bands,
                "jaccard": self.jaccard,
                "containment": self.containment,
                "short_jaccard": self.short_jaccard,
                "min_shingles": self.min_shingles,
                "long_shingles": self.long_shingles,
                "long_jaccard": self.long_jaccard,
                "long_containment": self.long_containment,
                "min_lower": self.min_lower,
            },
            separators=(",", ":"),
        )
