"""``newsq feeds add`` of a site's home page: its robots.txt's sitemaps and the feeds
the page links are registered (issue 16: sitemaps named in robots.txt are found)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli import newsq_env, run_newsq
from tests.corpus_server import serve_pages

HOME = b"""<html><head><title>Site</title>
<link rel="alternate" type="application/rss+xml" title="All" href="/rss.xml">
<link rel="alternate" type="application/atom+xml" href="https://feeds.site.example/atom">
<link rel="alternate" hreflang="de" href="/de/">
<link rel="stylesheet" href="/s.css">
</head><body><p>Home</p></body></html>"""


def _env(tmp_path: Path) -> dict[str, str]:
    return newsq_env(NEWSQ_DATABASE_URL=f"sqlite:///{tmp_path}/f.db", NEWSQ_ALLOW_PRIVATE="1",
                     NEWSQ_HOST_RATE="0")  # fmt: skip


def test_a_home_page_registers_its_sitemaps_and_feeds(tmp_path: Path) -> None:
    pages = {"/": HOME}
    with serve_pages(pages) as base:
        pages["/robots.txt"] = (f"User-agent: *\nDisallow: /private\nSitemap: {base}/news.xml\n"
                                "Sitemap: /sitemap_index.xml\n").encode()  # fmt: skip
        done = run_newsq("feeds", "add", f"{base}/", "--every", "5m", env=_env(tmp_path))
        assert done.returncode == 0, done.stderr
        listed = run_newsq("feeds", "list", "--json", env=_env(tmp_path))
    feeds = {row["url"]: row["kind"] for row in map(json.loads, listed.stdout.splitlines())}
    assert feeds == {
        f"{base}/news.xml": "sitemap",
        f"{base}/sitemap_index.xml": "sitemap",
        f"{base}/rss.xml": "feed",
        "https://feeds.site.example/atom": "feed",
    }
    assert done.stdout.count("\nadded ") + done.stdout.startswith("added ") == 4


def test_a_home_page_without_feeds_says_so(tmp_path: Path) -> None:
    with serve_pages({"/": b"<html><body><p>Nothing here</p></body></html>"}) as base:
        done = run_newsq("feeds", "add", f"{base}/", env=_env(tmp_path))
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and "no feed or sitemap found" in done.stderr
