"""Score newsq's clean stage against trafilatura on both dev corpora.

Run from the repository root::

    python -m bench.clean_bench            # print both tables
    python -m bench.clean_bench --check    # also exit 1 if newsq falls below the floor

The article benchmark's dev half is bundled (``newsq/demo/data/aeb-dev``); the wide
corpus (trafilatura's evaluation pages) is read from ``shared/corpus`` beside the
repository and scored its own way (:mod:`bench.clean_wide`).

Scoring follows the article-extraction-benchmark (see ``newsq/demo/data/aeb-dev``): tokens are
``\\w+`` runs, each text becomes a multiset of 4-token shingles, precision and recall are
averaged per document and F1 is the harmonic mean of the two means. Title coverage counts
pages with a non-empty title; date coverage counts, among pages whose markup carries a
publication date (JSON-LD ``datePublished``, ``article:published_time`` or similar meta,
``<time datetime>``), those where a date was returned.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import trafilatura

from bench import clean_wide
from newsq.clean import extract as clean
from newsq.demo.clean_eval import f1, page_scores
from newsq.records import Article

CORPUS = resources.files("newsq.demo") / "data" / "aeb-dev"
FLOOR_FILE = Path(__file__).with_name("clean_floor.json")
_DATE_MARKUP = re.compile(
    r"datePublished|article:published_time|og:published_time|<time[^>]+datetime=|"
    r"name=[\"'](?:pubdate|publishdate|publish-date|date|dc\.date|sailthru\.date|"
    r"parsely-pub-date)[\"']",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Page:
    """One corpus page: its id, original URL, HTML and gold text."""

    id: str
    url: str
    html: str
    gold: str

    @property
    def has_date_markup(self) -> bool:
        return bool(_DATE_MARKUP.search(self.html))


@dataclass(frozen=True)
class Score:
    """Corpus-level figures of one extractor."""

    name: str
    precision: float
    recall: float
    f1: float
    pages_per_s: float
    title_cover: float | None
    date_cover: float | None


def load_pages() -> list[Page]:
    """Every page of the dev corpus, sorted by id. Raises if the corpus is missing."""
    truth = json.loads((CORPUS / "ground-truth.json").read_text(encoding="utf-8"))
    pages = []
    for page_id in sorted(truth):
        raw = (CORPUS / "html" / f"{page_id}.html.gz").read_bytes()
        html = gzip.decompress(raw).decode("utf-8", errors="replace")
        item = truth[page_id]
        pages.append(Page(page_id, item.get("url", ""), html, item["articleBody"]))
    return pages


def run(
    name: str, pages: Iterable[Page], extractor: Callable[[Page], tuple[str, Article | None]]
) -> Score:
    """Score ``extractor`` (returning text and, if it has one, the article) over ``pages``."""
    pages = list(pages)
    outputs = []
    start = time.perf_counter()
    for page in pages:
        outputs.append(extractor(page))
    elapsed = time.perf_counter() - start
    precisions, recalls = [], []
    titled = dated = with_dates = 0
    for page, (text, article) in zip(pages, outputs, strict=True):
        if text:  # the benchmark averages precision over documents with a prediction
            p, r = page_scores(text, page.gold)
            precisions.append(p)
        else:
            r = 0.0
        recalls.append(r)
        if article is not None:
            titled += bool(article.title)
            if page.has_date_markup:
                with_dates += 1
                dated += bool(article.published)
    precision = sum(precisions) / len(precisions) if precisions else 0.0
    recall = sum(recalls) / len(recalls) if recalls else 0.0
    has_meta = any(article is not None for _, article in outputs)
    return Score(
        name,
        precision,
        recall,
        f1(precision, recall),
        len(pages) / elapsed if elapsed else float("inf"),
        titled / len(pages) if has_meta and pages else None,
        dated / with_dates if has_meta and with_dates else None,
    )


def newsq_extractor(page: Page) -> tuple[str, Article | None]:
    result = clean.extract(page.html, page.url)
    return (result.text, result) if isinstance(result, Article) else ("", None)


def trafilatura_extractor(page: Page) -> tuple[str, Article | None]:
    return trafilatura.extract(page.html, include_comments=False) or "", None


def table(scores: Iterable[Score]) -> str:
    """A Markdown table of ``scores``."""

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.1%}"

    lines = [
        "| extractor | precision | recall | F1 | pages/s | title | date (of marked-up) |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in scores:
        lines.append(
            f"| {s.name} | {s.precision:.3f} | {s.recall:.3f} | {s.f1:.3f} | "
            f"{s.pages_per_s:.1f} | {pct(s.title_cover)} | {pct(s.date_cover)} |"
        )
    return "\n".join(lines)


def _wide() -> clean_wide.Report | None:
    """The wide corpus's table, or None when the corpus is not there (it is not
    shipped; ``.ci/run`` finds it)."""
    try:
        pages = clean_wide.load_pages()
    except FileNotFoundError as exc:
        print(f"\nwide corpus not scored, its floor not checked: {exc}")
        return None
    report = clean_wide.measure(pages)
    print("\nwide corpus, dev half (trafilatura's evaluation pages, snippet scores)\n")
    print(clean_wide.table([report.anchor, report.ours]))
    print("\n" + report.summary())
    return report


def main(argv: list[str] | None = None) -> int:
    """Print the table; with ``--check``, return 1 when newsq is below the stored floor."""
    parser = argparse.ArgumentParser(prog="python -m bench.clean_bench", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail below bench/clean_floor.json")
    parser.add_argument(
        "--split",
        action="store_true",
        help="also score the two halves (even/odd position by id) separately",
    )
    args = parser.parse_args(argv)
    pages = load_pages()
    for page in pages[:5]:  # warm caches and lazy imports so pages/s is fair to both
        newsq_extractor(page)
        trafilatura_extractor(page)
    scores = [
        run("trafilatura extract (defaults)", pages, trafilatura_extractor),
        run("newsq clean.extract", pages, newsq_extractor),
    ]
    if args.split:
        for half, subset in (("even", pages[::2]), ("odd", pages[1::2])):
            scores.append(run(f"trafilatura, {half} half", subset, trafilatura_extractor))
            scores.append(run(f"newsq, {half} half", subset, newsq_extractor))
    print("article benchmark, dev half (gold text, shingle scores)\n")
    print(table(scores))
    wide = _wide()
    if not args.check:
        return 0
    floor = json.loads(FLOOR_FILE.read_text(encoding="utf-8"))
    ours = scores[1]
    failures = [
        f"{key} {getattr(ours, key):.3f} < floor {floor[key]:.3f}"
        for key in ("f1", "precision", "recall", "title_cover", "date_cover")
        if key in floor and (getattr(ours, key) or 0.0) < floor[key]
    ]
    if wide is not None:
        if wide.ours.f1 < floor["wide_f1"]:
            failures.append(f"wide corpus F1 {wide.ours.f1:.3f} < floor {floor['wide_f1']:.3f}")
        if len(wide.lost) > floor["wide_lost"]:
            failures.append(f"wide corpus: {len(wide.lost)} pages lost ({', '.join(wide.lost)})")
    for failure in failures:
        print(f"below floor: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
