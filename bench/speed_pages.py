"""Benchmark pages: the 121 dev-corpus pages in text variants of identical structure.

Variant 0 is the page as saved. Variant ``k > 0`` shuffles the words inside every text
node of the body (seeded by page and variant), so the markup, the number and length of
paragraphs and the bytes per page stay the same while every shingle changes: dedup
keeps the variants apart and every variant must be stored as its own article.
"""

from __future__ import annotations

import random
from pathlib import Path

import lxml.html

from tests.corpus_server import corpus

SKIP_TAGS = frozenset({"script", "style", "noscript", "template"})


def _shuffle(text: str | None, rng: random.Random) -> str | None:
    if not text or len(text.split()) < 3:
        return text
    words = text.split()
    rng.shuffle(words)
    lead = text[: len(text) - len(text.lstrip())]
    tail = text[len(text.rstrip()) :]
    return lead + " ".join(words) + tail


def variant(html: bytes, page_id: str, k: int) -> bytes:
    """Variant ``k`` of one page (``k == 0``: the page itself)."""
    if k == 0:
        return html
    rng = random.Random(f"{page_id}:{k}")
    tree = lxml.html.document_fromstring(html)
    for el in tree.iter():
        if not isinstance(el.tag, str):
            continue
        if el.tag not in SKIP_TAGS:
            el.text = _shuffle(el.text, rng)
        el.tail = _shuffle(el.tail, rng)
    out: bytes = lxml.html.tostring(tree, encoding="utf-8", doctype="<!DOCTYPE html>")
    return out


def write_pages(root: Path, count: int) -> list[str]:
    """Write ``count`` distinct pages under ``root``; returns their paths ("/p/...")."""
    pages = corpus()
    ids = sorted(pages)
    (root / "p").mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        k, index = divmod(i, len(ids))
        page_id = ids[index]
        path = f"/p/{page_id[:16]}-{k}.html"
        (root / path.lstrip("/")).write_bytes(variant(pages[page_id][0], page_id, k))
        paths.append(path)
    return paths
