"""The sample news site: served over real HTTP, checked against its own truth model."""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Iterator
from pathlib import Path

import feedparser
import httpx
import pytest
from lxml import html as lxml_html

from newsq.clean.extract import extract
from newsq.demo.edits import BODY_EDITS, Copy, syndicate
from newsq.demo.site import SampleSite, SiteSpec
from newsq.records import Article, Drop
from newsq.urls import normalize

SPEC = SiteSpec(stories=10, outlets=3, negatives=2, briefs=2, seed=3, server_error=True)


@pytest.fixture(scope="module")
def site() -> Iterator[SampleSite]:
    with SampleSite.build(SPEC) as served:
        yield served


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5, trust_env=False) as c:
        yield c


def shingles(text: str) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i : i + 5]) for i in range(len(words) - 4)}


def containment(a: str, b: str) -> float:
    x, y = shingles(a), shingles(b)
    return len(x & y) / max(1, min(len(x), len(y)))


def story_of(site: SampleSite, url: str) -> str | None:
    """The story of ``url`` by the truth, matched after normalisation."""
    return {normalize(u): s for u, s in site.truth.items()}[normalize(url)]


def test_feeds_list_exactly_the_feed_urls_of_their_outlet(
    site: SampleSite, client: httpx.Client
) -> None:
    listed: set[str] = set()
    for outlet, feed_url in zip(site.outlets, site.feed_urls, strict=True):
        response = client.get(feed_url)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/rss+xml")
        feed = feedparser.parse(response.content)
        assert not feed.bozo, feed.bozo_exception
        assert feed.feed.title == outlet.name
        links = {entry.link for entry in feed.entries}
        assert links and all(link.startswith(outlet.base_url + "/") for link in links)
        listed |= links
    extra = set(site.extra_urls)
    assert listed | extra == set(site.truth)
    assert not listed & extra


def test_every_url_answers_as_its_truth_says(site: SampleSite, client: httpx.Client) -> None:
    bases = [o.base_url for o in site.outlets]
    kinds = set()
    for entry in site.entries:
        url = entry.url(bases)
        kinds.add(entry.kind)
        response = client.get(url)
        ctype = response.headers["content-type"]
        if entry.kind == "redirect":
            assert response.status_code == 302
            target = response.headers["location"]
            assert story_of(site, target) == entry.story  # the original's URL, same story
        elif entry.state == "failed":
            assert response.status_code in (404, 500), url
        elif entry.reason == "bad_content_type":
            assert response.status_code == 200 and not ctype.startswith("text/html"), url
        else:
            assert response.status_code == 200 and ctype.startswith("text/html"), url
            assert response.headers["content-length"] == str(len(response.content))
            cleaned = extract(response.text, url)
            if entry.story is None:  # a page with no article on it
                assert entry.reason == "no_content"
                assert isinstance(cleaned, Drop), url
            else:
                assert isinstance(cleaned, Article), url
    assert {"original", "syndicated", "tracking", "amp", "redirect", "negative", "brief",
            "missing", "pdf", "image", "video", "error"} <= kinds  # fmt: skip


def test_template_pages_carry_headline_metadata(site: SampleSite, client: httpx.Client) -> None:
    bases = [o.base_url for o in site.outlets]
    rendered = [e for e in site.entries if e.kind in ("syndicated", "negative", "brief", "amp")]
    classes = set()
    for entry in rendered:
        url = entry.url(bases)
        tree = lxml_html.fromstring(client.get(url).content)
        (h1,) = tree.xpath("//h1")
        assert tree.xpath('string(//meta[@property="og:title"]/@content)') == h1.text_content()
        (ld,) = [json.loads(s) for s in tree.xpath('//script[@type="application/ld+json"]/text()')]
        assert ld["@type"] == "NewsArticle" and ld["headline"] == h1.text_content()
        assert ld["author"]["name"] and ld["datePublished"]
        canonical = tree.xpath('string(//link[@rel="canonical"]/@href)')
        if entry.kind == "amp":  # points at the original page, which holds the same story
            assert canonical != url and story_of(site, canonical) == entry.story
        else:
            assert canonical == url
            classes.add(tree.xpath("string(//h1/@class)") + "|" + str(h1.getparent().tag))
    assert len(classes) == len(site.outlets)  # every outlet its own markup


def test_syndicated_copies_are_edited_yet_share_most_text(
    site: SampleSite, client: httpx.Client
) -> None:
    bases = [o.base_url for o in site.outlets]
    originals = {e.story: e for e in site.entries if e.kind == "original"}
    syndicated = [e for e in site.entries if e.kind == "syndicated"]
    assert len(syndicated) >= 3
    for entry in syndicated:
        assert entry.edits
        copy = extract(client.get(entry.url(bases)).text)
        first = extract(client.get(originals[entry.story].url(bases)).text)
        assert isinstance(copy, Article) and isinstance(first, Article)
        assert copy.text != first.text
        assert containment(copy.text, first.text) >= 0.5, entry.edits


def test_syndicate_always_edits_and_keeps_most_of_the_text() -> None:
    paras = tuple(
        f"Paragraph {i} says the council said it will meet about the \"budget\" -- again... "
        f"Sentence two of paragraph {i} follows here with more words about the city."
        for i in range(8)
    )  # fmt: skip
    original = Copy("Council says new budget plans will go to vote", paras)
    seen = set()
    for seed in range(200):
        copy = syndicate(original, random.Random(seed))
        assert copy.edits and (copy.paragraphs, copy.headline) != (paras, original.headline)
        assert containment(copy.text, original.text) >= 0.5, copy.edits
        seen |= set(copy.edits)
    assert seen == {*BODY_EDITS, "rewrite_headline"}
    for name, edit in BODY_EDITS.items():  # each edit, alone, changes the text
        assert edit(original, random.Random(1)).paragraphs != paras, name


def test_expected_counts_agree_with_the_truth(site: SampleSite) -> None:
    truth, expected = site.truth, site.expected
    by_url = {normalize(url): story for url, story in truth.items()}
    stories = {s for s in truth.values() if s is not None}
    assert expected.urls_in == len(by_url)
    assert expected.stories == expected.stored == len(stories) == SPEC.stories + 2 + 2
    articles = sum(1 for s in by_url.values() if s is not None)
    assert expected.duplicate == articles - len(stories) > 0
    assert expected.skipped == {"bad_content_type": 2, "no_content": 1}
    assert expected.failed == {"http_error": 3}
    total = expected.stored + expected.duplicate
    assert total + sum(expected.skipped.values()) + sum(expected.failed.values()) == len(by_url)
    tracking = [e for e in site.entries if e.kind == "tracking"]
    assert tracking and len(by_url) < len(truth)  # tracking variants fold into one URL


def test_write_truth_has_a_line_per_url(site: SampleSite, tmp_path: Path) -> None:
    site.write_truth(tmp_path / "truth.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "truth.jsonl").read_text().splitlines()]
    assert {r["url"]: r["story"] for r in rows} == site.truth
    assert all(r["edits"] for r in rows if r["kind"] == "syndicated")


def test_default_site_builds_and_serves_fast_and_the_same_every_time() -> None:
    started = time.perf_counter()
    with SampleSite.build(SiteSpec()) as site:
        assert time.perf_counter() - started < 2.0
        assert 20 <= site.expected.stories <= 30 and len(site.feed_urls) == 4
    again = SampleSite.build(SiteSpec())
    assert again.entries == site.entries and again.expected == site.expected


def test_separate_hosts_put_each_outlet_on_its_own_address(client: httpx.Client) -> None:
    with SampleSite.build(SiteSpec(stories=3, outlets=2, separate_hosts=True)) as site:
        hosts = [httpx.URL(o.base_url).host for o in site.outlets]
        assert hosts == ["127.0.0.2", "127.0.0.3"]
        for feed_url in site.feed_urls:
            assert client.get(feed_url).status_code == 200
    assert site.truth  # the URLs stay known after stop
    with pytest.raises(RuntimeError):
        _ = SampleSite.build(SiteSpec(stories=3)).truth  # never served: no URLs yet


def test_a_spec_beyond_the_corpus_is_refused() -> None:
    with pytest.raises(ValueError, match="corpus"):
        SampleSite.build(SiteSpec(stories=120, negatives=10))
    with pytest.raises(ValueError, match="unknown edits"):
        SampleSite.build(SiteSpec(edits=("rewrite_headline", "translate")))


def test_edits_can_be_restricted() -> None:
    site = SampleSite.build(SiteSpec(stories=30, edits=("wire_credit", "add_note")))
    applied = {name for e in site.entries for name in e.edits}
    assert applied == {"wire_credit", "add_note"}
