"""Score newsq's clean stage against trafilatura on trafilatura's own evaluation corpus.

The dev half of that corpus (467 pages, many languages and charsets, news and not) is
read from ``shared/corpus/traf-eval-dev`` beside the repository (``NEWSQ_BENCH_CORPUS``
names another folder holding ``traf-eval-dev``); it is not shipped in the wheel. Run
from the repository root::

    python -m bench.clean_wide             # print the table
    python -m bench.clean_wide --pages     # also the pages where newsq keeps nothing

Scoring is trafilatura's own (``shared/corpus/README.md``): whitespace is collapsed in
snippets and text; a "with" snippet found is a true positive, one missing a false
negative, a "without" snippet found a false positive; counts are summed over the
corpus and F1 = 2TP / (2TP + FP + FN). Pages are read as raw bytes and decoded as the
fetch stage decodes a body without a charset header.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trafilatura

from newsq.clean import second_opinion
from newsq.demo.clean_eval import Page, load_pages, newsq_text

_SPACES = re.compile(r"\s+")


@dataclass
class Score:
    name: str
    tp: int = 0
    fp: int = 0
    fn: int = 0
    seconds: float = 0.0
    pages: int = 0
    kept: dict[str, int] = field(default_factory=dict)  # page file -> "with" snippets found
    noise: dict[str, int] = field(default_factory=dict)  # page file -> "without" snippets found

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        return 2 * self.tp / (2 * self.tp + self.fp + self.fn) if self.tp else 0.0


def score(name: str, pages: Iterable[Page], extractor: Callable[[Page], str]) -> Score:
    out = Score(name)
    for page in pages:
        start = time.process_time()
        text = _SPACES.sub(" ", extractor(page) or "")
        out.seconds += time.process_time() - start
        out.pages += 1
        found = sum(_SPACES.sub(" ", s).strip() in text for s in page.with_)
        out.tp += found
        out.fn += len(page.with_) - found
        noise = sum(_SPACES.sub(" ", s).strip() in text for s in page.without)
        out.fp += noise
        out.kept[page.file], out.noise[page.file] = found, noise
    return out


def trafilatura_text(page: Page) -> str:
    return trafilatura.extract(page.raw, url=page.url, include_comments=False,
                               include_tables=True, fast=False) or ""  # fmt: skip


class SecondOpinions:
    """Counts the pages on which the clean stage paid for a second extractor: readability
    (suspicious lists or tables) or trafilatura's full extraction (a doubtful result)."""

    def __init__(self) -> None:
        self.readability = 0
        self.full = 0
        self._readability = second_opinion.readability_text
        self._doubt = second_opinion.doubt

    def __enter__(self) -> SecondOpinions:
        def readability(tree: Any, url: str | None) -> str:
            self.readability += 1
            return self._readability(tree, url)

        def doubt(text: str, tree: Any) -> str | None:
            why = self._doubt(text, tree)
            self.full += why is not None
            return why

        second_opinion.readability_text = readability
        second_opinion.doubt = doubt
        return self

    def __exit__(self, *exc: object) -> None:
        second_opinion.readability_text = self._readability
        second_opinion.doubt = self._doubt


def table(scores: Iterable[Score]) -> str:
    lines = ["| extractor | precision | recall | F1 | CPU ms/page |", "|---|---|---|---|---|"]
    for s in scores:
        lines.append(f"| {s.name} | {s.precision:.3f} | {s.recall:.3f} | {s.f1:.3f} | "
                     f"{1000 * s.seconds / max(s.pages, 1):.0f} |")  # fmt: skip
    return "\n".join(lines)


def lost_pages(ours: Score, anchor: Score) -> list[str]:
    """Pages where the anchor keeps some of the article and we keep none of it."""
    return sorted(f for f, n in anchor.kept.items() if n > 0 and ours.kept.get(f, 0) == 0)


@dataclass(frozen=True)
class Report:
    """Both extractors on the corpus, and what the clean stage paid for second opinions."""

    anchor: Score
    ours: Score
    readability: int
    full: int

    @property
    def lost(self) -> list[str]:
        return lost_pages(self.ours, self.anchor)

    def summary(self) -> str:
        n = self.ours.pages
        return (f"pages: {n}; readability asked on {self.readability} "
                f"({self.readability / n:.1%}), full extraction on {self.full} "
                f"({self.full / n:.1%}); "
                f"trafilatura keeps some of the article, newsq none: {len(self.lost)}")  # fmt: skip


def measure(pages: list[Page]) -> Report:
    for page in pages[:5]:  # warm caches and lazy imports so the times are fair to both
        newsq_text(page)
        trafilatura_text(page)
    anchor = score("trafilatura extract (fast=False, tables)", pages, trafilatura_text)
    with SecondOpinions() as opinions:
        ours = score("newsq clean.extract", pages, newsq_text)
    return Report(anchor, ours, opinions.readability, opinions.full)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.clean_wide", description=__doc__)
    parser.add_argument("--pages", action="store_true", help="list the pages newsq loses")
    parser.add_argument("--json", metavar="FILE", help="also write the per-page counts")
    args = parser.parse_args(argv)
    report = measure(load_pages())
    print(table([report.anchor, report.ours]))
    print("\n" + report.summary())
    if args.pages:
        for name in report.lost:
            print(f"  {name}")
    if args.json:
        counts = {"anchor": [report.anchor.kept, report.anchor.noise],
                  "newsq": [report.ours.kept, report.ours.noise]}  # fmt: skip
        Path(args.json).write_text(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
