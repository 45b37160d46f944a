"""Scoring of a clean stage's text against gold text, as the article-extraction
benchmark scores it (shared by ``bench.clean_bench`` and the clean tests): tokens are
``\\w+`` runs, each text a multiset of 4-token shingles. And the pages of the wide
corpus (trafilatura's evaluation pages, read from ``shared/corpus`` beside the
repository, not shipped), for ``bench.clean_wide`` and the tests of pages once lost."""

from __future__ import annotations

import gzip
import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from newsq.clean import extract as clean
from newsq.fetch.decoding import BodyError, decode_html
from newsq.records import Article

_TOKEN = re.compile(r"\w+")


def shingles(text: str, n: int = 4) -> Counter[tuple[str, ...]]:
    """The multiset of n-token shingles of ``text`` (one short shingle if fewer tokens)."""
    tokens = _TOKEN.findall(text)
    if len(tokens) < n:
        return Counter([tuple(tokens)]) if tokens else Counter()
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def page_scores(predicted: str, gold: str) -> tuple[float, float]:
    """(precision, recall) of one document; (0, 0) when nothing overlaps."""
    pred, ref = shingles(predicted), shingles(gold)
    tp = sum((pred & ref).values())
    fp = sum(pred.values()) - tp
    fn = sum(ref.values()) - tp
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return precision, recall


def f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


# -- the wide corpus ------------------------------------------------------------


def corpus_dir() -> Path:
    """``traf-eval-dev``: under ``NEWSQ_BENCH_CORPUS``, else under ``shared/corpus`` in
    the nearest folder above the repository that has one. Raises when none is found."""
    given = os.environ.get("NEWSQ_BENCH_CORPUS")
    above = Path(__file__).resolve().parents
    roots = [Path(given)] if given else [p / "shared" / "corpus" for p in above]
    for root in roots:
        if (root / "traf-eval-dev" / "evaldata.json").is_file():
            return root / "traf-eval-dev"
    raise FileNotFoundError("traf-eval-dev not found: NEWSQ_BENCH_CORPUS names its folder")


@dataclass(frozen=True)
class Page:
    """One page: its original URL, raw bytes and snippets."""

    url: str
    file: str
    raw: bytes
    with_: tuple[str, ...]
    without: tuple[str, ...]


def load_pages(folder: Path | None = None) -> list[Page]:
    folder = folder or corpus_dir()
    data = json.loads((folder / "evaldata.json").read_text(encoding="utf-8"))
    pages = []
    for url in sorted(data):
        item = data[url]
        raw = gzip.decompress((folder / "html" / f"{item['file']}.gz").read_bytes())
        pages.append(Page(url, item["file"], raw, tuple(item["with"]), tuple(item["without"])))
    return pages


def newsq_text(page: Page) -> str:
    try:
        html, _ = decode_html(page.raw, None)
    except BodyError:
        return ""
    result = clean.extract(html, page.url)
    return result.text if isinstance(result, Article) else ""
