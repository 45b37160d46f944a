"""Metadata the markup leaves out: a date found by htmldate, a language detected from the
text, and the paywall flag of JSON-LD, from the page to the store and the export."""

from __future__ import annotations

import csv
import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from lxml import etree

from newsq.clean.extract import parse
from newsq.clean.metadata import Metadata, extract_metadata, normalise_date
from newsq.records import Article
from newsq.store.database import Store, articles
from newsq.store.export import export_store

GERMAN = (
    "Der Gemeinderat hat am Dienstagabend nach langer Debatte beschlossen, die Brücke über "
    "den Fluss im kommenden Frühjahr zu sanieren. Die Arbeiten sollen etwa drei Monate dauern."
)
ENGLISH = (
    "The city council voted on Tuesday evening, after a long debate, to repair the bridge "
    "over the river next spring. The work is expected to take about three months."
)


def _meta(head: str = "", body: str = "", *, lang: str = "",
          url: str | None = "https://news.example/story") -> Metadata:  # fmt: skip
    tree = parse(f"<html{lang}><head><title>A story</title>{head}</head><body>{body}</body></html>")
    assert tree is not None
    return extract_metadata(tree, url)


def _ld(obj: dict[str, Any]) -> str:
    return f"<script type='application/ld+json'>{json.dumps(obj)}</script>"


# --- dates ----------------------------------------------------------------------------


def test_a_date_only_in_the_text_is_found_without_changing_the_tree() -> None:
    page = (
        "<html><head><title>Bridge repairs</title></head><body><h1>Bridge repairs</h1>"
        "<div class='byline'>By Ann Lee · Published 14 May 2019</div>"
        f"<p>{ENGLISH}</p></body></html>"
    )
    tree = parse(page)
    assert tree is not None
    before = etree.tostring(tree)
    assert extract_metadata(tree, "https://news.example/bridge").published == "2019-05-14"
    assert etree.tostring(tree) == before  # trafilatura reads this same tree next
    assert extract_metadata(tree, "https://news.example/bridge", guess=False).published is None


def test_the_urls_date_is_taken_when_the_page_has_none() -> None:
    meta = _meta(body=f"<p>{ENGLISH}</p>", url="https://news.example/2021/03/09/bridge/")
    assert meta.published == "2021-03-09"


def test_without_a_url_the_canonical_links_date_is_taken() -> None:
    head = "<link rel='canonical' href='https://news.example/2020/02/03/bridge/'>"
    assert _meta(head, f"<p>{ENGLISH}</p>", url=None).published == "2020-02-03"


def test_a_placeholder_year_is_no_date() -> None:
    assert normalise_date("0001-01-01T00:00:00+00:00") is None
    # a placeholder in JSON-LD gives way to the meta tag's real date
    head = _ld({"@type": "NewsArticle", "datePublished": "0001-01-01T00:00:00+00:00"})
    head += "<meta property='article:published_time' content='2019-11-19T10:00:00Z'>"
    assert _meta(head, f"<p>{ENGLISH}</p>").published == "2019-11-19T10:00:00+00:00"


def test_no_date_anywhere_is_none() -> None:
    assert _meta(body=f"<p>{ENGLISH}</p>").published is None


# --- language -------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "code"), [(GERMAN, "de"), (ENGLISH, "en")])
def test_language_detected_when_the_markup_says_nothing(text: str, code: str) -> None:
    assert _meta(body=f"<p>{text}</p><p>{text}</p>").language == code
    assert _meta(body=f"<div>{text}</div>").language == code  # no paragraphs: the body's text


def test_a_script_inside_a_paragraph_is_not_its_text() -> None:
    script = "var notice = document.getElementById('notice'); notice.hidden = true; " * 40
    assert _meta(body=f"<p><script>{script}</script></p><p>{GERMAN}</p>").language == "de"


def test_the_markups_language_wins_and_too_little_text_gets_none() -> None:
    assert _meta(body=f"<p>{GERMAN}</p>", lang=" lang='fr'").language == "fr"
    assert _meta(body="<p>Bridge</p><script>var x = 'the council voted';</script>").language is None


# --- paywall --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "paywalled"),
    [
        ({"@type": "NewsArticle", "isAccessibleForFree": False}, True),
        ({"@type": "NewsArticle", "isAccessibleForFree": "False"}, True),
        ({"@type": "NewsArticle", "isAccessibleForFree": "false"}, True),
        ({"@type": "NewsArticle", "isAccessibleForFree": True}, False),
        ({"@type": "NewsArticle", "isAccessibleForFree": "True"}, False),
        ({"@type": "NewsArticle", "isAccessibleForFree": "perhaps"}, None),
        ({"@type": "NewsArticle", "headline": "A story"}, None),
        # Google's markup of a paywalled section: the part is not free
        ({"@type": "NewsArticle", "hasPart": {"isAccessibleForFree": "False"}}, True),
        (
            {
                "@type": "NewsArticle",
                "isAccessibleForFree": True,
                "hasPart": [{"cssSelector": ".x"}, {"isAccessibleForFree": False}],
            },
            True,
        ),
        # the flag on the WebPage around the article
        (
            {
                "@graph": [
                    {"@type": "WebPage", "isAccessibleForFree": False},
                    {"@type": "NewsArticle", "headline": "A story"},
                ]
            },
            True,
        ),
        ({"@type": "Product", "isAccessibleForFree": False}, None),
    ],
)
def test_paywall_from_json_ld(obj: dict[str, Any], paywalled: bool | None) -> None:
    assert _meta(_ld(obj), f"<p>{ENGLISH}</p>").paywalled is paywalled


def test_a_page_without_json_ld_says_nothing_of_a_paywall() -> None:
    assert _meta(body=f"<p>{ENGLISH}</p>").paywalled is None


# --- store and export -----------------------------------------------------------------


def _stored(store: Store, i: int, paywalled: bool | None) -> None:
    article = Article(title=f"Story {i}", author=None, published="2026-11-01", language="en",
                      site="news.example", canonical_url=None, text=ENGLISH,
                      paywalled=paywalled)  # fmt: skip
    url = f"https://news.example/story/{i}"
    row = {"url": url, "final_url": url, **article.to_json(), "content_hash": f"{i:064x}",
           "story_id": f"s{i}", "duplicate_of": None, "similarity": 1.0, "match": "new",
           "fetched_at": datetime(2026, 11, 1, i, tzinfo=UTC)}  # fmt: skip
    assert store.save_article(row, {"url": url, "state": "stored", "story_id": f"s{i}"})


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_paywalled_is_stored_and_exported(fmt: str, sqlite_url: str, tmp_path: Path) -> None:
    store = Store.from_url(sqlite_url)
    for i, flag in enumerate((True, False, None), start=1):
        _stored(store, i, flag)
    out = tmp_path / f"out.{fmt}"
    export_store(store, store.iter_articles(), fmt, str(out))
    store.close()
    if fmt == "jsonl":
        back = [json.loads(line)["paywalled"] for line in out.read_text().splitlines()]
    elif fmt == "csv":
        with out.open(newline="", encoding="utf-8") as handle:
            back = [json.loads(r["paywalled"] or "null") for r in csv.DictReader(handle)]
    else:
        back = pq.read_table(out).column("paywalled").to_pylist()
    assert back == [True, False, None]


def test_a_store_of_the_last_revision_is_migrated(sqlite_url: str) -> None:
    from alembic import command

    from newsq.store.database import _alembic_config, make_engine

    engine = make_engine(sqlite_url)
    cfg = _alembic_config(engine)
    command.upgrade(cfg, "0003_feed_origin")  # a store made before paywalled existed
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO articles (url, content_hash, story_id, similarity, match, fetched_at,"
            " stored_at) VALUES ('https://a.example/1', 'h', 's1', 1.0, 'new',"
            " '2026-11-01 00:00:00', '2026-11-01 00:00:00')"
        ))  # fmt: skip
    engine.dispose()
    store = Store.from_url(sqlite_url)  # brings it to the newest revision
    (row,) = store.iter_articles()
    assert row["url"] == "https://a.example/1" and row["paywalled"] is None
    _stored(store, 2, True)
    with store.engine.connect() as conn:
        flags = conn.execute(sa.select(articles.c.paywalled).order_by(articles.c.id)).scalars()
        assert list(flags) == [None, True]
    store.close()


def test_the_clean_stage_gives_paywalled() -> None:
    import newsq

    head = _ld({"@type": "NewsArticle", "headline": "Bridge", "isAccessibleForFree": "False"})
    body = f"<article><h1>Bridge</h1>{f'<p>{ENGLISH}</p>' * 3}</article>"
    article = newsq.extract(f"<html><head>{head}</head><body>{body}</body></html>")
    assert isinstance(article, Article)
    assert (article.paywalled, article.language) == (True, "en")
    assert article.to_json()["paywalled"] is True  # what newsq extract prints


def test_newsq_extract_prints_every_field_for_a_page_without_an_article(tmp_path: Path) -> None:
    from tests.cli import newsq_env, run_newsq

    (tmp_path / "a.html").write_text("<html><body><p>Too short.</p></body></html>")
    done = run_newsq("extract", "a.html", env=newsq_env(), cwd=str(tmp_path), timeout=60)
    line = json.loads(done.stdout)
    fields = ["path", *(f.name for f in dataclasses.fields(Article))]
    assert (line["reason"], sorted(line)) == ("no_content", sorted([*fields, "reason"]))
