"""Text normalisation and MinHash sketches for the dedup index.

Two copies of one story differ in ways that carry no meaning: typographic quotes and
dashes, case, punctuation, spacing. :func:`words` removes those; :func:`content_hash`
hashes what is left, so such copies get the same hash.

A :class:`Sketch` summarises a text for near-duplicate search, with the parameters of a
:class:`~newsq.dedup.config.DedupConfig`:

- ``sig``: a MinHash signature of its word shingles (``hashes`` values, 32 bits each,
  of which the index stores the high 16 bits: enough to estimate Jaccard similarity
  and, because truncation keeps order, containment (see ``newsq/dedup/dedup.lua``));
- ``bands``: LSH band digests of the full signature (``bands`` of ``rows`` values: 21
  of 3 find a copy of Jaccard similarity 0.42 with probability ~0.8, of 0.6 with ~0.99;
  12 of 4 missed half the copies at 0.45, where trimmed and re-templated copies live);
- ``lead_bands``: band digests of a MinHash over the first ``lead_words`` words only,
  which find a copy trimmed to its first paragraphs (its Jaccard similarity to the
  original is low, but its lead is the original's lead).

Every hash here is stable across processes and machines (blake2b, fixed multipliers,
the config's seed); Python's ``hash()`` is not, and is never used.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from functools import cache

import numpy as np

from newsq.dedup.config import DedupConfig

_FOLD = (
    ("\u2018", "'"), ("\u2019", "'"), ("\u201a", "'"), ("\u201b", "'"), ("\u2032", "'"),
    ("\u201c", '"'), ("\u201d", '"'), ("\u201e", '"'), ("\u201f", '"'), ("\u2033", '"'),
    ("\u00ab", '"'), ("\u00bb", '"'), ("\u2013", "-"), ("\u2014", "-"), ("\u2212", "-"),
    ("\u00a0", " "), ("\u00ad", ""),
)  # fmt: skip
"""Typographic variants folded by :func:`words` (a scan and replace per fold: ``str.translate``
with a dict calls back per character, far slower)."""
# A word is a run of letters or digits; an apostrophe inside a word is dropped ("don't"
# and "don’t" both become "dont"), every other punctuation mark separates words.
# (The quote comes first in the pattern so that the engine scans for it: a leading
# lookbehind is tried at every position, far slower.)
_APOSTROPHE = re.compile(r"'(?<=\w')(?=\w)")
_WORD = re.compile(r"[^\W_]+")

_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
# one multiplier per word position of a shingle (config.SHINGLE_MAX of them)
_SHINGLE_MUL = np.array(
    [0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93,
     0xFF51AFD7ED558CCD], dtype=np.uint64
)  # fmt: skip
_P = 0x9E3779B97F4A7C15
"""Odd multiplier of the per-word polynomial hash (invertible modulo 2**64)."""
_powers = np.ones(1, dtype=np.uint64)  # _P ** i and _P ** -i modulo 2**64, grown on demand
_inverse_powers = np.ones(1, dtype=np.uint64)


def words(text: str) -> list[str]:
    """The normalised words of ``text``: NFKC, lower case, quotes folded, no punctuation.

    Returns an empty list for a text with no letters or digits.
    """
    text = unicodedata.normalize("NFKC", text)
    for variant, plain in _FOLD:
        if variant in text:
            text = text.replace(variant, plain)
    text = text.lower()
    return _WORD.findall(_APOSTROPHE.sub("", text))


def _joined(text: str) -> bytes:
    """The normalised words of ``text``, space-separated, UTF-8: what is hashed."""
    return " ".join(words(text)).encode()


def content_hash(text: str) -> str:
    """SHA-256 (hex) of the normalised words: equal for texts differing only in form."""
    return _text_hash(_joined(text))


def _text_hash(joined: bytes) -> str:
    return hashlib.sha256(joined).hexdigest()


@dataclass(frozen=True)
class Sketch:
    """What the index needs to know about one text (see the module docstring)."""

    text_hash: str
    shingles: int
    sig: np.ndarray  # config.hashes x uint32
    bands: tuple[bytes, ...]
    lead_bands: tuple[bytes, ...]

    def packed_sig(self) -> bytes:
        """The signature's high 16 bits per value, big-endian: 2 bytes a value."""
        return (self.sig >> np.uint32(16)).astype(">u2").tobytes()


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads the bits of 64-bit values (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _MIX1
    x = x ^ (x >> np.uint64(27))
    x = x * _MIX2
    return x ^ (x >> np.uint64(31))


def _power_tables(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``_P ** i`` and ``_P ** -i`` (modulo 2**64) for i < at least n."""
    global _powers, _inverse_powers
    if _powers.size < n:
        size = max(n, 2 * _powers.size, 1 << 16)
        _powers = _power_series(_P, size)
        _inverse_powers = _power_series(pow(_P, -1, 2**64), size)
    return _powers, _inverse_powers


def _power_series(base: int, size: int) -> np.ndarray:
    """``base ** i`` modulo 2**64 for i < size."""
    steps = np.full(size, base, dtype=np.uint64)
    steps[0] = 1
    with np.errstate(over="ignore"):
        return np.multiply.accumulate(steps)


def word_hashes(joined: bytes) -> np.ndarray:
    """64-bit hashes of the space-separated words of ``joined`` (UTF-8), in order.

    Vectorised: a polynomial hash of each word's bytes (and its closing space) is a
    difference of one prefix sum, taken by ``np.add.reduceat`` and shifted back by the
    inverse power of its start; no Python loop over words.
    """
    if not joined:
        return np.zeros(0, dtype=np.uint64)
    data = np.frombuffer(joined + b" ", dtype=np.uint8)
    powers, inverse = _power_tables(data.size)
    starts = np.concatenate(([0], np.flatnonzero(data[:-1] == 32) + 1))
    with np.errstate(over="ignore"):
        sums = np.add.reduceat(data.astype(np.uint64) * powers[: data.size], starts)
        return _mix(sums * inverse[starts])


def _shingles(ids: np.ndarray, size: int) -> np.ndarray:
    """64-bit hashes of the ``size``-grams of the word hashes ``ids``, in text order.

    A text shorter than ``size`` words is one shingle; an empty text has none.
    """
    if ids.size == 0:
        return np.zeros(0, dtype=np.uint64)
    n = max(ids.size - size + 1, 1)
    acc = np.zeros(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for i in range(min(size, ids.size)):
            acc = _mix(acc + ids[i : i + n] * _SHINGLE_MUL[i])
    return acc


@cache
def _permutations(seed: int, hashes: int) -> tuple[np.ndarray, np.ndarray]:
    """The odd multipliers and the addends of ``hashes`` hash permutations from ``seed``."""
    rng = np.random.default_rng(seed)
    mul = rng.integers(1, 2**63, size=hashes, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    return mul, rng.integers(0, 2**63, size=hashes, dtype=np.uint64)


def _empty(config: DedupConfig) -> np.ndarray:
    return np.full(config.hashes, 0xFFFFFFFF, dtype=np.uint32)


def minhash(hashes: np.ndarray, config: DedupConfig) -> np.ndarray:
    """``config.hashes`` minimum 32-bit hash values of ``hashes``; all 0xFFFFFFFF for
    an empty set."""
    if hashes.size == 0:
        return _empty(config)
    mul, add = _permutations(config.seed, config.hashes)
    with np.errstate(over="ignore"):
        # multiply-shift hashing: the high 32 bits of a * x + b (a odd) per permutation
        perm = (hashes[:, None] * mul[None, :] + add[None, :]) >> np.uint64(32)
    return perm.min(axis=0).astype(np.uint32)


def band_digests(tag: bytes, sig: np.ndarray, bands: int, rows: int) -> tuple[bytes, ...]:
    """8-byte digests of the first ``bands`` runs of ``rows`` values of ``sig``."""
    raw = sig[: bands * rows].astype(">u4").tobytes()
    step = rows * 4
    return tuple(
        hashlib.blake2b(tag + bytes([b]) + raw[b * step : (b + 1) * step], digest_size=8).digest()
        for b in range(bands)
    )


def sketch(text: str, config: DedupConfig) -> Sketch:
    """The :class:`Sketch` of ``text``; an empty text gets no bands (exact match only)."""
    joined = _joined(text)
    text_hash = _text_hash(joined)  # = content_hash(text): the stored content hash
    hashes = _shingles(word_hashes(joined), config.shingle)
    if hashes.size == 0:
        return Sketch(text_hash, 0, _empty(config), (), ())
    distinct = np.unique(hashes)  # the minimum over a set: repeated shingles add nothing
    sig = minhash(distinct, config)
    lead_n = max(config.lead_words - config.shingle + 1, 1)
    lead = minhash(hashes[:lead_n], config) if hashes.size > lead_n else sig
    return Sketch(
        text_hash=text_hash,
        shingles=int(distinct.size),
        sig=sig,
        bands=band_digests(b"F", sig, config.bands, config.rows),
        lead_bands=band_digests(b"L", lead, config.lead_bands, config.lead_rows),
    )
