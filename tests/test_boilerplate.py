"""Cross-page boilerplate against a real Redis, shared by separate OS processes."""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import time

import pytest
import redis

from newsq import errors
from newsq.clean import boilerplate
from newsq.clean.boilerplate import BoilerplateFilter, Hold, HoldConfig, relook_after
from newsq.config.settings import Settings
from newsq.records import Article, Drop
from tests.redis_counts import commands_run

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
            result = bp.strip(_page(n), url=SITE_URL.format(n=n), may_wait=False)
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
    bp = BoilerplateFilter(redis_client, settings)
    assert bp.site_pages("example-gazette.test") == 8

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
        result = bp.strip(copy, url=SITE_URL.format(n=f"42?ref={k}"), may_wait=False)
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
    other = bp.strip(_page(7), url="https://other-site.test/a/7", may_wait=False)
    assert isinstance(other, Article)
    assert TEMPLATE in other.text


ABOUT = (
    "{name} is an independent newsroom covering the county's towns, schools and courts. "
    "Our journalism is supported by readers like you: subscribe today to keep it going."
)
APPEAL = (
    "Become a member of {name}. Members keep our reporting free for everyone to read. "
    "Join today from $5 a month and get the members' briefing and invitations to events."
)
BRIEFS = (
    "The county library will close its east branch for three weeks of roof repairs.",
    "Two lanes of the river bridge reopened on Friday after a month of resurfacing.",
    "The school board named a former principal as interim superintendent.",
)
QUICK = HoldConfig(quiet_seconds=0.3, max_seconds=1.5)


def _brief(outlet: str, n: int) -> tuple[Article, str]:
    """Brief ``n`` of ``outlet``: its one sentence, then the outlet's furniture."""
    text = "\n".join((BRIEFS[n], ABOUT.format(name=outlet), APPEAL.format(name=outlet)))
    url = f"https://{outlet.lower().replace(' ', '-')}.test/briefs/{n}"
    article = Article(title=f"Brief {n}", author=None, published=None, language="en",
                      site=outlet, canonical_url=url, text=text)  # fmt: skip
    return article, url


def test_first_brief_of_a_site_waits_then_keeps_its_own_sentence(
    redis_client: redis.Redis, settings: Settings
) -> None:
    """Issue 17 item 2: a new site's first brief was stored as brief + blurb + appeal
    (the filter judged no site under 8 pages); it now waits for a few more pages."""
    bp = BoilerplateFilter(redis_client, settings, QUICK)
    first, url = _brief("Valley Post", 0)
    waited = bp.strip(first, url=url)
    for n in (1, 2):  # more of the site's pages come in meanwhile
        page, page_url = _brief("Valley Post", n)
        bp.strip(page, url=page_url)
    again = bp.strip(first, url=url)  # the held page, looked at again
    assert isinstance(again, Article)
    assert again.text == BRIEFS[0]  # its own sentence, not the blurb and appeal
    assert isinstance(waited, Hold)
    third, third_url = _brief("Valley Post", 2)
    assert bp.strip(third, url=third_url) == dataclasses.replace(third, text=BRIEFS[2])


def test_a_lone_short_page_waits_only_while_its_site_is_quiet_briefly(
    redis_client: redis.Redis, settings: Settings
) -> None:
    bp = BoilerplateFilter(redis_client, settings, QUICK)
    page, url = _brief("Lone Courier", 0)
    hold = bp.strip(page, url=url)
    assert isinstance(hold, Hold)
    assert 0 < hold.countdown <= QUICK.quiet_seconds
    time.sleep(QUICK.quiet_seconds)  # no other page of the site came: judged as it is
    assert bp.strip(page, url=url) == page


def test_a_lone_short_page_with_nothing_of_its_site_coming_goes_on_at_once(
    redis_client: redis.Redis, settings: Settings
) -> None:
    """A short page of a new site waited 2 s even when no other page of its site was on
    its way (``newsq run`` of one URL): waiting could teach nothing. It waits only while
    more may come."""
    bp = BoilerplateFilter(redis_client, settings, QUICK)
    page, url = _brief("Quiet Ledger", 0)
    assert bp.strip(page, url=url, coming=lambda: False) == page
    other, other_url = _brief("Busy Ledger", 0)
    assert isinstance(bp.strip(other, url=other_url, coming=lambda: True), Hold)
    # the site's later page is counted; with nothing more on the way it goes on
    later, later_url = _brief("Busy Ledger", 1)
    bp.strip(later, url=later_url, may_wait=False)
    assert isinstance(bp.strip(other, url=other_url, coming=lambda: False), Article)


def test_a_brief_held_at_the_end_of_a_burst_is_looked_at_again_soon(
    redis_client: redis.Redis, settings: Settings
) -> None:
    """The end of ``newsq run`` over 905 pages waited 1.5-3 s for one brief held with
    the run's last pages: it was looked at again a whole quiet interval (2 s) later, and
    held again then because a later page of its site had come, with nothing more on the
    way. It is now looked at again after as long as it waited (0.25 s first) and judged
    once nothing of its site is coming."""
    bp = BoilerplateFilter(redis_client, settings, QUICK)
    page, url = _brief("Closing Gazette", 0)
    first = bp.strip(page, url=url, coming=lambda: True)  # the run's last pages queued
    assert isinstance(first, Hold) and first.countdown <= 0.25
    for n in (1, 2):  # they come in meanwhile; then none is left
        later, later_url = _brief("Closing Gazette", n)
        bp.strip(later, url=later_url, may_wait=False)
    again = bp.strip(page, url=url, coming=lambda: False)
    assert isinstance(again, Article) and again.text == BRIEFS[0]


def test_a_long_hold_looks_again_less_often() -> None:
    """While the site keeps streaming, the look-agains stretch with the wait: a few over
    a long hold, each no later than when the site would turn quiet."""
    config = dataclasses.replace(QUICK, quiet_seconds=2.0, max_seconds=15.0)
    assert [round(relook_after(config, waited, 0.0), 2) for waited in (0, 0.25, 0.5, 1, 4)] == [
        0.25, 0.25, 0.5, 1.0, 2.0]  # fmt: skip
    assert relook_after(config, 1.0, 1.5) == 0.5  # the site turns quiet in 0.5 s
    assert relook_after(config, 14.9, 0.0) == pytest.approx(0.1)  # bounded by max_seconds


def test_the_hold_setting_bounds_the_wait_and_zero_turns_it_off(
    redis_client: redis.Redis, settings: Settings
) -> None:
    off = BoilerplateFilter(redis_client, dataclasses.replace(settings, boilerplate_hold_seconds=0))
    page, url = _brief("Setting Gazette", 0)
    assert off.strip(page, url=url, coming=lambda: True) == page
    short = BoilerplateFilter(
        redis_client, dataclasses.replace(settings, boilerplate_hold_seconds=1)
    )
    page, url = _brief("Setting Herald", 0)
    hold = short.strip(page, url=url, coming=lambda: True)
    assert isinstance(hold, Hold) and 0 < hold.countdown <= 1.0


def test_a_lone_brief_through_the_pipeline_is_stored_without_waiting(settings: Settings) -> None:
    """Through the pipeline, with nothing else of its site queued, in flight or in the
    broker's queues: the new site's one brief is stored in the same step."""
    from newsq.pipeline import fetch_step, process_step
    from newsq.resources import Runtime
    from tests.corpus_server import serve_pages

    page, _ = _brief("Solo Tribune", 0)
    html = f"<html><head><title>{page.title}</title></head><body><article>"
    html += "".join(f"<p>{line}</p>" for line in page.text.split("\n"))
    html += "</article></body></html>"
    rt = Runtime(dataclasses.replace(settings, robots=False))
    try:
        with serve_pages({"/brief": html.encode()}) as base:
            url = f"{base}/brief"
            rt.ledger.enqueue([url])
            fetched = fetch_step(rt, url, hand_off=False)
            step = process_step(rt, url, fetched.page)
    finally:
        rt.close()
    assert (step.action, step.state) == ("done", "stored"), step


def test_a_short_page_waits_at_most_max_seconds(
    redis_client: redis.Redis, settings: Settings
) -> None:
    bp = BoilerplateFilter(redis_client, settings, QUICK)
    page, url = _brief("Busy Wire", 0)
    started = time.monotonic()
    results = []
    while time.monotonic() - started < QUICK.max_seconds + 1:
        results.append(bp.strip(page, url=url))
        if not isinstance(results[-1], Hold):
            break
        # a page of another story of the site keeps arriving, none with the furniture
        other = dataclasses.replace(
            page, text=f"Story {len(results)} of the day, long enough.", canonical_url=None
        )
        bp.strip(other, url=f"{url}/{len(results)}", may_wait=False)
        time.sleep(0.2)
    assert results[-1] == page  # released unchanged, not lost
    assert QUICK.max_seconds - 0.3 <= time.monotonic() - started <= QUICK.max_seconds + 0.6


def test_long_pages_never_wait(redis_client: redis.Redis, settings: Settings) -> None:
    bp = BoilerplateFilter(redis_client, settings, QUICK)
    page = dataclasses.replace(_page(1), text="\n".join(_story(1) * 8))
    assert bp.strip(page, url=SITE_URL.format(n=1)) == page


def test_a_held_brief_ends_stored_with_its_own_sentence(settings: Settings) -> None:
    """Through the pipeline: a new site's first brief waits (its body in Redis, the URL
    ``fetched``), is looked at again once more of the site's pages came, and is stored
    with its own sentence; a page that waits is never lost."""
    from datetime import UTC, datetime

    from newsq.demo.pages import PageInfo, article_html, make_styles
    from newsq.pipeline import fetch_step, process_step
    from newsq.resources import Runtime
    from newsq.urls import host_of
    from tests.corpus_server import serve_pages

    style = make_styles(2, about_box=True)[1]
    when = datetime(2019, 11, 18, tzinfo=UTC)
    pages = {
        f"/briefs/{n}": article_html(
            style, PageInfo(f"/briefs/{n}", f"Brief {n}", (text,), "Staff", when, "news")
        ).encode()
        for n, text in enumerate(BRIEFS)
    }
    rt = Runtime(dataclasses.replace(settings, robots=False))
    try:
        with serve_pages(pages) as base:
            urls = [f"{base}{path}" for path in pages]
            rt.ledger.enqueue(urls)
            host = host_of(urls[0])
            steps = []
            for url in urls:
                # another fetch of the site is in flight meanwhile: more of it is coming
                other = rt.frontier.offer(host, f"{base}/elsewhere", 0, 0)
                fetched = fetch_step(rt, url, hand_off=False)
                steps.append(process_step(rt, url, fetched.page))
                rt.frontier.release(host, other or "")
            assert steps[0].action == "next" and steps[0].state == "fetched"  # held
            assert 0 < steps[0].countdown <= 2.0
            assert (rt.ledger.get(urls[0]) or {}).get("state") == "fetched"
            assert steps[2].state == "stored"  # the third page: the furniture is known
            for url, step in zip(urls, steps, strict=True):
                if step.action == "next":
                    assert process_step(rt, url).state == "stored"  # looked at again
        texts = {row["url"]: row["text"] for row in rt.store.iter_articles(unique_only=False)}
    finally:
        rt.close()
    assert [texts[url] for url in urls] == list(BRIEFS)


def test_a_brief_whose_headline_is_its_sentence_keeps_it(
    redis_client: redis.Redis, settings: Settings
) -> None:
    """The repeat of the headline is dropped from a page's text, so a brief whose
    headline is its one sentence came out as its site's furniture alone."""
    bp = BoilerplateFilter(redis_client, settings, QUICK)
    for n in (1, 2):
        page, url = _brief("Harbor Courier", n)
        bp.strip(page, url=url)
    page, url = _brief("Harbor Courier", 0)
    furniture_only = dataclasses.replace(page, title=BRIEFS[0], text=page.text.split("\n", 1)[1])
    assert bp.strip(furniture_only, url=url) == dataclasses.replace(page, title=BRIEFS[0],
                                                                   text=BRIEFS[0])  # fmt: skip
    label = dataclasses.replace(furniture_only, title="Library east branch")  # no sentence
    dropped = bp.strip(label, url=url + "?again")
    assert isinstance(dropped, Drop) and dropped.reason == errors.NO_CONTENT


def test_a_page_costs_the_same_commands_whatever_its_paragraphs(
    redis_client: redis.Redis, settings: Settings
) -> None:
    """Issue 18: a key per paragraph took an INCR and an EXPIRE each (37 commands for a
    page of 17); the site's table takes one HMGET and one HSET for them all."""
    bp = BoilerplateFilter(redis_client, _settings(settings))
    bp.strip(_page(99), url=SITE_URL.format(n=99), may_wait=False)  # the script loaded
    per_page = []
    for n, extra in ((0, 2), (1, 40)):
        page = _page(n)
        page = dataclasses.replace(
            page,
            text="\n".join(
                [page.text, *_story(1000 + n)[:1]]
                + [f"Paragraph {k} of page {n}, its own." for k in range(extra)]
            ),
        )
        before = commands_run(redis_client)
        bp.strip(page, url=SITE_URL.format(n=n), may_wait=False)
        per_page.append(commands_run(redis_client) - before - 1)  # less the EVALSHA itself
    # an HMGET of this generation's table and of the one before, one HSET; before: 7
    # (the site's own hash read, written and given its EXPIRE on each page), then 4 (the
    # table's EXPIREAT on each page, where its generation's first page sets it)
    assert per_page[0] == per_page[1] <= 3, per_page
    keys = redis_client.keys(f"{settings.key_prefix}:bp:*")
    assert 1 <= len(keys) <= 2, keys  # one or two generations' tables
    assert all(redis_client.ttl(key) > 0 for key in keys)


def test_a_site_a_version_before_counted_keeps_its_count(
    redis_client: redis.Redis, settings: Settings
) -> None:
    """Versions before kept a site's page count in a hash of its own: it is read while
    the site's tables lack it, and the count goes on from there in the table."""
    settings = _settings(settings)
    old = f"{settings.key_prefix}:bp:{{example-gazette.test}}:site"
    redis_client.hset(old, mapping={"pages": 5, "last": f"{time.time() - 60:.6f}"})
    bp = BoilerplateFilter(redis_client, settings)
    assert bp.site_pages("example-gazette.test") == 5
    bp.strip(_page(1), url=SITE_URL.format(n=1), may_wait=False)
    bp.strip(_page(2), url=SITE_URL.format(n=2), may_wait=False)
    assert bp.site_pages("example-gazette.test") == 7
    redis_client.delete(old)  # no longer read: the table has the count
    assert bp.site_pages("example-gazette.test") == 7
    bp.strip(_page(3), url=SITE_URL.format(n=3), may_wait=False)
    assert bp.site_pages("example-gazette.test") == 8


def test_a_template_in_use_stays_and_an_unused_one_fades(
    redis_client: redis.Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counts read from the generation before are written on into the current one; a
    paragraph no new page carried for two generations is forgotten."""
    # the filter's clock, moved by hand: generations of 1 s on the wall clock split
    # the four pages when a loaded machine stalls the test; never behind the real clock,
    # so the tables' EXPIREAT stays ahead of Redis' own
    clock = _Clock(math.floor(time.time()) + 1.05)
    monkeypatch.setattr(boilerplate, "time", clock)
    settings = dataclasses.replace(_settings(settings), boilerplate_ttl_days=1 / 86400)
    bp = BoilerplateFilter(redis_client, settings)  # generations of 1 s
    for n in range(4):  # the four pages in one generation
        bp.strip(_page(n), url=SITE_URL.format(n=n), may_wait=False)
        clock.now += 0.01
    clock.now += 1  # into the next generation
    kept = bp.strip(_page(4), url=SITE_URL.format(n=4), may_wait=False)
    assert isinstance(kept, Article) and TEMPLATE not in kept.text
    for n in range(5, 12):  # the site's pages go on, without the template, for 2.1 s
        clock.now += 0.3
        bp.strip(_page(n, template=False), url=SITE_URL.format(n=n), may_wait=False)
    faded = bp.strip(_page(12), url=SITE_URL.format(n=12), may_wait=False)
    assert isinstance(faded, Article) and TEMPLATE in faded.text
    assert faded.text.split("\n")[1:2] == [TEMPLATE]


@dataclasses.dataclass
class _Clock:
    now: float

    def time(self) -> float:
        return self.now


def test_the_frontier_says_a_host_is_busy_while_its_url_waits_or_is_fetched(
    settings: Settings,
) -> None:
    from newsq.resources import Runtime

    rt = Runtime(dataclasses.replace(settings, host_rate=1.0))
    try:
        host, idle = "busy.example.test", "idle.example.test"
        lease = rt.frontier.offer(host, f"https://{host}/1", 0, 0)  # fetched now
        assert lease is not None and rt.frontier.busy({host, idle})
        assert rt.frontier.offer(host, f"https://{host}/2", 0, 0) is None  # waits its turn
        rt.frontier.release(host, lease)
        assert rt.frontier.busy({host}) and not rt.frontier.busy({idle})
    finally:
        rt.close()
