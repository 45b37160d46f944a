"""Hostile pages in the clean stage: bounded work per page, metadata of sane length,
JSON-LD that cannot raise. Every page is refused (or cut) in milliseconds, by design."""

from __future__ import annotations

import time

import pytest

from newsq import errors
from newsq.clean.extract import extract
from newsq.clean.limits import CleanLimits
from newsq.clean.metadata import AUTHOR_MAX, SITE_MAX, TITLE_MAX, capped
from newsq.config.settings import Settings
from newsq.records import Article, Drop

ARTICLE = "<article>" + "<p>A sentence of the article, long enough to count.</p>" * 8 + "</article>"


def _page(body: str, head: str = "") -> str:
    return f"<html><head><title>A page</title>{head}</head><body>{body}</body></html>"


def _timed(html: str, limits: CleanLimits | None = None) -> tuple[Article | Drop, float]:
    started = time.perf_counter()
    result = extract(html, "https://example.com/a", limits)
    return result, time.perf_counter() - started


def test_a_page_of_100000_tiny_elements_is_refused_before_the_parse() -> None:
    result, seconds = _timed(_page("<p>" + "<b>x</b>" * 100_000 + "</p>"))
    assert isinstance(result, Drop) and result.reason == errors.TOO_COMPLEX, result
    assert "tags" in result.detail
    assert seconds < 0.2  # a count of "<", no parse (the whole clean took a minute)


def test_a_page_of_few_tags_and_many_elements_is_refused_after_the_parse() -> None:
    # "<br>" is one tag an element: the markup passes the tag count, the tree does not
    result, seconds = _timed(_page("<p>" + "x<br>" * 30_000 + "</p>"))
    assert isinstance(result, Drop) and result.reason == errors.TOO_COMPLEX, result
    assert "elements" in result.detail
    assert seconds < 1.0  # lxml's parse and count only, no extraction pass


def test_a_page_over_its_time_budget_is_too_complex() -> None:
    result, _ = _timed(_page(ARTICLE), CleanLimits(time_budget=1e-9))
    assert isinstance(result, Drop) and result.reason == errors.TOO_COMPLEX, result
    assert "budget" in result.detail


def test_an_article_within_the_bounds_is_kept() -> None:
    result, _ = _timed(_page(ARTICLE), CleanLimits(max_elements=30))
    assert isinstance(result, Article), result


def test_the_bounds_are_settings() -> None:
    settings = Settings.from_env(
        {"NEWSQ_CLEAN_MAX_ELEMENTS": "10", "NEWSQ_CLEAN_TIME_BUDGET": "2.5"}
    )
    limits = CleanLimits.from_settings(settings)
    assert (limits.max_elements, limits.max_tags, limits.time_budget) == (10, 40, 2.5)
    result, _ = _timed(_page(ARTICLE), limits)
    assert isinstance(result, Drop) and result.reason == errors.TOO_COMPLEX


def test_too_complex_is_a_skip_reason() -> None:
    assert errors.TOO_COMPLEX in errors.REASONS and errors.TOO_COMPLEX in errors.SKIP_REASONS


@pytest.mark.parametrize("depth", [100_000, 5_000, 900])
def test_deeply_nested_json_ld_is_ignored(depth: int) -> None:
    nested = "[" * depth + '{"@type": "NewsArticle", "headline": "Deep"}' + "]" * depth
    head = f'<script type="application/ld+json">{nested}</script>'
    result, _ = _timed(_page(ARTICLE, head))
    assert isinstance(result, Article), result


def _ld(obj: str) -> str:
    return f'<script type="application/ld+json">{obj}</script>'


HUGE = "word " * 1_000_000  # 5 MB


@pytest.mark.parametrize(
    ("head", "body", "field", "cap"),
    [
        (_ld(f'{{"@type": "NewsArticle", "headline": "{HUGE}"}}'), "", "title", TITLE_MAX),
        (f'<meta property="og:title" content="{HUGE}">', "", "title", TITLE_MAX),
        ("", f"<h1>{HUGE}</h1>", "title", TITLE_MAX),
        (_ld(f'{{"@type": "NewsArticle", "author": {{"name": "{HUGE}"}}}}'), "", "author",
         AUTHOR_MAX),
        (_ld('{"@type": "NewsArticle", "author": [' + ",".join(['"A Name"'] * 50_000) + "]}"),
         "", "author", AUTHOR_MAX),
        (f'<meta name="author" content="{HUGE}">', "", "author", AUTHOR_MAX),
        (f'<meta property="og:site_name" content="{HUGE}">', "", "site", SITE_MAX),
    ],
)  # fmt: skip
def test_metadata_fields_are_capped(head: str, body: str, field: str, cap: int) -> None:
    result, seconds = _timed(_page(body + ARTICLE, head))
    assert isinstance(result, Article), result
    value = getattr(result, field)
    assert value is not None and 0 < len(value) <= cap, len(value or "")
    assert seconds < 2.0


def test_a_long_value_is_cut_at_a_word_and_says_so() -> None:
    assert capped("short", 10) == "short"
    assert capped("one two three four five", 16) == "one two three…"
    assert capped("x" * 50, 10) == "x" * 9 + "…"


def test_an_overlong_canonical_url_is_not_taken() -> None:
    head = f'<link rel="canonical" href="https://example.com/{"a" * 5000}">'
    result, _ = _timed(_page(ARTICLE, head))
    assert isinstance(result, Article) and result.canonical_url == "https://example.com/a"


def test_a_date_after_a_huge_prefix_is_not_searched_for() -> None:
    head = f'<meta property="article:published_time" content="{"x" * 5_000_000}2024-01-02">'
    result, seconds = _timed(_page(ARTICLE, head))
    assert isinstance(result, Article) and result.published is None
    assert seconds < 2.0
