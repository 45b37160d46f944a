"""Date and language coverage of the clean stage's metadata, before and after guessing.

Run from the repository root::

    python -m bench.metadata_bench          # both dev corpora, one table each

For each page of the article benchmark's dev half (bundled) and of the wide corpus's
dev half (``bench.clean_wide``), the page is parsed as the clean stage parses it and
its metadata read twice: from the markup alone (JSON-LD, meta tags, ``<time>``,
``<html lang>``), then with the fallbacks for what the markup left out (htmldate's
search for a date, fast and extensive; py3langid on the paragraphs for a language).

A date counts as correct when the page's URL carries one (``/2019/05/14/``,
``2019-05-14``, ``/20190514``) and the two are at most a day apart (the URL's day is
local, a stamp may be in UTC). htmldate reads the URL's
date first, so its "correct" share on those pages is no test of it: the line
"htmldate, URL withheld" gives what it finds in the page alone on the pages where the
markup had no date and the URL has one. The detector's accuracy is measured on the
pages whose markup names a language, against that language. CPU is thread time per
page, over every page of the corpus (a fallback runs only where the markup said nothing).
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import TypeVar

from bench import clean_bench, clean_wide
from newsq.clean.extract import parse
from newsq.clean.metadata import extract_metadata, guess_date, guess_language
from newsq.fetch.decoding import BodyError, decode_html

T = TypeVar("T")
_URL_DATE = re.compile(r"(?<!\d)((?:19|20)\d\d)([/_-]?)(\d\d)\2(\d\d)(?!\d)")


def url_date(url: str) -> str | None:
    """The day a URL's path names, ``YYYY-MM-DD``, or None."""
    path = url.split("://", 1)[-1].partition("/")[2]
    for match in _URL_DATE.finditer(path):
        year, _, month, day = match.groups()
        try:
            return date(int(year), int(month), int(day)).isoformat()
        except ValueError:
            continue
    return None


def same_day(published: str, truth: str) -> bool:
    """True when ``published`` falls within a day of ``truth``: a URL names the local
    day, a stamp may be in UTC."""
    days = date.fromisoformat(published[:10]) - date.fromisoformat(truth)
    return abs(days.days) <= 1


def timed(call: Callable[[], T]) -> tuple[T, float]:
    started = time.thread_time()
    result = call()
    return result, time.thread_time() - started


@dataclass
class Tally:
    """Counts and CPU seconds over one corpus."""

    name: str
    pages: int = 0
    markup_s: float = 0.0
    dated: dict[str, int] = field(default_factory=dict)
    correct: dict[str, int] = field(default_factory=dict)
    date_s: dict[str, float] = field(default_factory=dict)
    url_dated: int = 0
    withheld: list[int] = field(default_factory=lambda: [0, 0, 0])  # pages, found, agree
    languages: dict[str, int] = field(default_factory=dict)
    language_s: float = 0.0
    detector: list[int] = field(default_factory=lambda: [0, 0, 0])  # pages, given, agree
    detector_s: float = 0.0

    def add(self, key: str, published: str | None, truth: str | None, spent: float) -> None:
        self.dated[key] = self.dated.get(key, 0) + (published is not None)
        hit = published is not None and truth is not None and same_day(published, truth)
        self.correct[key] = self.correct.get(key, 0) + hit
        self.date_s[key] = self.date_s.get(key, 0.0) + spent


def measure(name: str, pages: Iterable[tuple[str, str]]) -> Tally:
    """The tally of ``pages``, (url, decoded html) each."""
    tally = Tally(name)
    for url, html in pages:
        tree = parse(html)
        if tree is None:
            continue
        tally.pages += 1
        truth = url_date(url)
        tally.url_dated += truth is not None
        meta, spent = timed(lambda: extract_metadata(tree, url, guess=False))  # noqa: B023
        tally.markup_s += spent
        tally.add("markup", meta.published, truth, 0.0)
        for key, extensive in (("htmldate fast", False), ("htmldate extensive", True)):
            found, spent = (meta.published, 0.0)
            if found is None:
                found, spent = timed(lambda: guess_date(tree, url, extensive=extensive))  # noqa: B023
            tally.add(key, found, truth, spent)
        if meta.published is None and truth is not None:
            alone = guess_date(tree, "about:blank", extensive=True)  # no URL, not even canonical
            tally.withheld[0] += 1
            tally.withheld[1] += alone is not None
            tally.withheld[2] += alone is not None and same_day(alone, truth)
        language, spent = (meta.language, 0.0)
        if language is None:
            language, spent = timed(lambda: guess_language(tree))  # noqa: B023
            tally.language_s += spent
        else:
            detected, spent = timed(lambda: guess_language(tree))  # noqa: B023
            tally.detector_s += spent
            tally.detector[0] += 1
            tally.detector[1] += detected is not None
            tally.detector[2] += detected == meta.language
        for key, found in (("markup", meta.language), ("+ py3langid", language)):
            tally.languages[key] = tally.languages.get(key, 0) + (found is not None)
    return tally


def report(t: Tally) -> str:
    def share(n: int, of: int) -> str:
        return f"{n / of:.1%}" if of else "-"

    def ms(seconds: float) -> str:
        return f"{1000 * seconds / t.pages:.2f}"

    lines = [
        f"{t.name}: {t.pages} pages, {t.url_dated} with a date in the URL; "
        f"metadata from the markup {ms(t.markup_s)} ms CPU per page",
        "| date from | pages with a date | correct (URL-dated pages) | added CPU ms/page |",
        "|---|---|---|---|",
    ]
    for key, dated in t.dated.items():
        label = key if key == "markup" else f"markup, else {key}"
        lines.append(f"| {label} | {share(dated, t.pages)} | "
                     f"{share(t.correct[key], t.url_dated)} | {ms(t.date_s[key])} |")  # fmt: skip
    pages, found, agree = t.withheld
    lines.append(f"htmldate, URL withheld, on the {pages} URL-dated pages without a date in "
                 f"the markup: a date on {found}, the URL's day on {agree}")  # fmt: skip
    lines += ["", "| language from | pages with a language | added CPU ms/page |", "|---|---|---|"]
    lines.append(f"| markup | {share(t.languages['markup'], t.pages)} | 0 |")
    lines.append(f"| markup, else py3langid | {share(t.languages['+ py3langid'], t.pages)} | "
                 f"{ms(t.language_s)} |")  # fmt: skip
    pages, given, agree = t.detector
    lines.append(f"py3langid on the {pages} pages whose markup names a language: one given on "
                 f"{given}, the markup's on {agree} ({share(agree, pages)}); "
                 f"{1000 * t.detector_s / max(pages, 1):.2f} ms CPU a page")  # fmt: skip
    return "\n".join(lines)


def aeb_pages() -> Iterable[tuple[str, str]]:
    for page in clean_bench.load_pages():
        yield page.url, page.html


def wide_pages() -> Iterable[tuple[str, str]]:
    for page in clean_wide.load_pages():
        try:
            html, _ = decode_html(page.raw, None)
        except BodyError:
            continue
        yield page.url, html


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args(argv)
    warm = parse("<html><body><p>" + "the model is read once " * 5 + "</p></body></html>")
    if warm is not None:  # the model's loading is not counted against the first page
        guess_language(warm)
    print(report(measure("article benchmark, dev (121 pages)", aeb_pages())))
    print()
    try:
        wide = list(wide_pages())
    except FileNotFoundError as exc:
        print(f"wide corpus: not measured ({exc})")
        return 0
    print(report(measure(f"wide corpus, dev ({len(wide)} pages)", wide)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
