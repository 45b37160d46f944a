"""Cross-page boilerplate against a real Redis, shared by separate OS processes."""

from __future__ import annotations

import dataclasses
import multiprocessing

import redis

from newsq import errors
from newsq.clean.boilerplate import BoilerplateFilter
from newsq.config.settings import Settings
from newsq.records import Article, Drop

TEMPLATE = "Sign up for the Morning Briefing: the five stories you need, in your inbox daily."
FOOTER = "Copyright 2019 Example Gazette. All rights reserved."
SITE_URL = "https://www.example-gazette.test/news/{n}"


def _story(n: int) -> list[str]:
    """Three paragraphs no other story shares."""
    return [
        f"Council meeting number {n} voted on the budget for district {n * 7} late on Tuesday.",
        f"Residents of ward {n + 100} said the proposal number {n} ignored their roads.",
        f"The mayor will answer questions about item {n * 13} at the next session.",
    ]


def _page(n: int, *, template: bool = True) -> Article:
    paragraphs = _story(n)
    if template:
        paragraphs = [paragraphs[0], TEMPLATE, *paragraphs[1:], FOOTER]
    return Article(
        title=f"Story {n}",
        author=None,
        published=None,
        language="en",
        site="Example Gazette",
        canonical_url=SITE_URL.format(n=n),
        text="\n".join(paragraphs),
    )


def _settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, boilerplate_site_pages=4, boilerplate_min_pages=3)


def _ingest(redis_url: str, settings: Settings, numbers: list[int]) -> list[str]:
    """Runs in a child process: strip each page with a filter of its own."""
    client = redis.Redis.from_url(redis_url)
    try:
        bp = BoilerplateFilter(client, settings)
        out = []
        for n in numbers:
            result = bp.strip(_page(n), url=SITE_URL.format(n=n))
            out.append(result.text if isinstance(result, Article) else "")
        return out
    finally:
        client.close()


def test_template_dropped_across_processes_article_kept(
    redis_url: str, redis_client: redis.Redis, settings: Settings
) -> None:
    settings = _settings(settings)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        first, second = pool.starmap(
            _ingest, [(redis_url, settings, [0, 2, 4, 6]), (redis_url, settings, [1, 3, 5, 7])]
        )
    texts = first + second
    # the site's first pages are left alone (too few seen to tell template); later
    # ones, whichever process handled them, lose it; article paragraphs always stay
    assert any(TEMPLATE in text for text in texts)
    assert any(TEMPLATE not in text for text in texts)
    for n, text in zip([0, 2, 4, 6, 1, 3, 5, 7], texts, strict=True):
        assert all(paragraph in text for paragraph in _story(n))
    assert int(redis_client.get(f"{settings.key_prefix}:bp:{{example-gazette.test}}:pages")) == 8

    bp = BoilerplateFilter(redis_client, settings)
    result = bp.strip(_page(99), url=SITE_URL.format(n=99))
    assert isinstance(result, Article)
    assert TEMPLATE not in result.text
    assert FOOTER not in result.text
    assert result.text.split("\n") == _story(99)


def test_copies_of_one_story_never_make_template(
    redis_client: redis.Redis, settings: Settings
) -> None:
    settings = _settings(settings)
    bp = BoilerplateFilter(redis_client, settings)
    for n in range(6):  # enough distinct pages for the site to be judged
        bp.strip(_page(n), url=SITE_URL.format(n=n))
    story = _page(42, template=False)
    # the same story fetched again and again, and near copies with an update appended
    copies = [story] * 4 + [
        dataclasses.replace(story, text=story.text + f"\nUpdate {k}: the vote was delayed.")
        for k in range(4)
    ]
    for k, copy in enumerate(copies):
        result = bp.strip(copy, url=SITE_URL.format(n=f"42?ref={k}"))
        assert isinstance(result, Article)
        for paragraph in _story(42):
            assert paragraph in result.text


def test_nothing_but_template_is_dropped(redis_client: redis.Redis, settings: Settings) -> None:
    settings = _settings(settings)
    bp = BoilerplateFilter(redis_client, settings)
    for n in range(6):
        bp.strip(_page(n), url=SITE_URL.format(n=n))
    only_template = dataclasses.replace(_page(50), text=f"{TEMPLATE}\n{FOOTER}")
    result = bp.strip(only_template, url=SITE_URL.format(n=50))
    assert isinstance(result, Drop)
    assert result.reason == errors.NO_CONTENT


def test_sites_are_kept_apart(redis_client: redis.Redis, settings: Settings) -> None:
    settings = _settings(settings)
    bp = BoilerplateFilter(redis_client, settings)
    for n in range(6):
        bp.strip(_page(n), url=SITE_URL.format(n=n))
    other = bp.strip(_page(7), url="https://other-site.test/a/7")
    assert isinstance(other, Article)
    assert TEMPLATE in other.text
