"""Hostile-input report: every hostile case, its outcome (a reason code, a count, the
one line a command printed) and its wall time, against the servers the tests use.

Feeds, sitemaps, pages and headers come from ``tests/hostile_server.py`` and pages served
by ``tests/corpus_server.py`` on loopback; addresses are fetched under the default
settings (nothing private allowed); settings and files go through ``newsq``'s own CLI
in this process. A case passes when its outcome starts as expected; one that raises is
shown as ``RAISED``. Exit 0 when every case passed.

    python -m bench.hostile_report [--timeout 1]
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # test_fetch imports hostile_server bare

from newsq.clean.metadata import TITLE_MAX  # noqa: E402
from newsq.config.settings import SETTINGS, AllowPrivate, Settings  # noqa: E402
from newsq.errors import ConfigError  # noqa: E402
from newsq.fetch.client import Fetcher  # noqa: E402
from tests.corpus_server import serve_pages  # noqa: E402
from tests.hostile_server import HostileServer, raw_path  # noqa: E402
from tests.test_fetch import HOSTILE_CASES, RAW_CASES  # noqa: E402

Outcome = Callable[[], str]


class QuietServer(HostileServer):
    """The tests' hostile server, without a traceback on stderr when a client hangs
    up mid-request: the cases do that on purpose (deadlines, caps)."""

    def handle_error(self, request: object, client_address: object) -> None:
        pass


@dataclass(frozen=True)
class Case:
    group: str
    name: str
    expected: str
    """A regular expression the outcome starts with when newsq does the right thing."""
    run: Outcome


@dataclass(frozen=True)
class Row:
    case: Case
    outcome: str
    seconds: float

    @property
    def passed(self) -> bool:
        return re.match(self.case.expected, self.outcome) is not None


def timed(case: Case) -> Row:
    started = time.perf_counter()
    try:
        outcome = case.run()
    except Exception as exc:  # what the report is for: a case must never get here
        outcome = f"RAISED {type(exc).__name__}: {exc}"
    return Row(case, " ".join(outcome.split()), time.perf_counter() - started)


# -- feeds and sitemaps ----------------------------------------------------------------

LOL = "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10))
BILLION_LAUGHS = f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY lol0 "lol">{LOL}]>'
XXE = '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
SITEMAP_NS = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'


def _rss(items: str, prolog: str = "") -> bytes:
    return f"{prolog}<rss version='2.0'><channel><title>t</title>{items}</channel></rss>".encode()


def _item(link: str, title: str = "t") -> str:
    return f"<item><title>{title}</title><link>{link}</link></item>"


def _urlset(loc: str, prolog: str = "") -> bytes:
    return f"{prolog}<urlset {SITEMAP_NS}><url><loc>{loc}</loc></url></urlset>".encode()


def _index(*locs: str) -> bytes:
    entries = "".join(f"<sitemap><loc>{loc}</loc></sitemap>" for loc in locs)
    return f"<sitemapindex {SITEMAP_NS}>{entries}</sitemapindex>".encode()


def feed_pages() -> dict[str, bytes]:
    """Feed and sitemap bodies ``serve_pages`` serves (as text/html: a feed's type is
    not checked beyond text)."""
    return {
        "/laughs.rss": _rss(_item("http://a.test/1", "&lol9;"), BILLION_LAUGHS),
        "/xxe.rss": _rss(_item("http://a.test/&x;", "&x;"), XXE),
        "/laughs.xml": _urlset("http://a.test/&lol9;", BILLION_LAUGHS),
        "/xxe.xml": _urlset("http://a.test/&x;", XXE),
        "/items.rss": _rss("".join(_item(f"http://a.test/{i}") for i in range(100_000))),
        "/50mb.rss": _rss(_item("http://a.test/1", "x" * 50_000_000)),
    }


def discover(fetcher: Fetcher, url: str) -> str:
    """What the discovery of one input found: its URLs, the bound it stopped at, or why
    it could not be read."""
    from newsq.feeds.intake import Discovery

    discovery = Discovery(fetcher)
    urls, error = discovery.expand(url)
    out = f"{len(urls)} URLs, {discovery.requests} requests"
    if discovery.stopped:
        out += f"; discovery_limit: {discovery.stopped}"
    if any("root:" in u for u in urls):
        out += "; READ /etc/passwd"
    return f"{out}; {error}" if error else out


def feed_cases(fetcher: Fetcher, server: HostileServer, base: str) -> Iterator[Case]:
    def feed(name: str, url: str, expected: str) -> Case:
        return Case("feed", name, expected, lambda: discover(fetcher, url))

    yield feed("billion laughs", f"{base}/laughs.rss", "1 URLs")
    yield feed("XXE naming /etc/passwd", f"{base}/xxe.rss", "1 URLs, 1 requests")
    yield feed("100,000 items", f"{base}/items.rss", "100000 URLs")
    yield feed("a 50 MB feed", f"{base}/50mb.rss", "0 URLs, 1 requests; too_large")
    yield feed("gzip bomb (1 GiB of zeros)", server.url("/gzip-bomb"), "0 URLs, 1 requests; too_")
    yield feed("body is /dev/zero", server.url("/feed-names-zero"), "0 URLs, 1 requests; not a")
    for path in ("/etc/hostname", "file:///etc/hostname"):
        url = server.url(f"/body-is?text={quote(path)}")
        yield feed(f"body is {path}", url, "0 URLs, 1 requests; not a feed")
    yield feed("sitemap: billion laughs", f"{base}/laughs.xml",
               "0 URLs, 1 requests; not a feed or sitemap: .*amplification")  # fmt: skip
    yield feed("sitemap: XXE", f"{base}/xxe.xml", "1 URLs, 1 requests")
    for path, served in [("/sitemap.xml.gz", "application/x-gzip"),
                         ("/sitemap-gzip.xml.gz", "application/gzip"),
                         ("/sitemap-octets.xml.gz", "application/octet-stream")]:  # fmt: skip
        yield feed(f"sitemap.xml.gz as {served}", server.url(path), "1 URLs, 1 requests")
    yield feed("x-gzip body that is not gzip", server.url("/sitemap-not-gzip.xml.gz"),
               "0 URLs, 1 requests; bad_content_type")  # fmt: skip
    yield feed("index of 1,000 children of 1,000", server.url("/sitemap-tree/1000/1/t.xml"),
               "100000 URLs, 102 requests; discovery_limit: 100000 URLs")  # fmt: skip
    yield feed("40 children a level, 3 levels", server.url("/sitemap-tree/40/3/t.xml"),
               "0 URLs, 200 requests; discovery_limit: 200 requests")  # fmt: skip
    yield feed("index listing itself", f"{base}/loop-a.xml", "0 URLs, 2 requests")


# -- pages: the fetch stage, then the clean stage ----------------------------------------

ARTICLE = "<article>" + "<p>A sentence of the article, long enough to count.</p>" * 8 + "</article>"
HUGE = "word " * 1_000_000  # 5 MB


def _page(body: str, head: str = "") -> bytes:
    return f"<html><head><title>A page</title>{head}</head><body>{body}</body></html>".encode()


def page_pages() -> dict[str, bytes]:
    deep = "[" * 100_000 + '{"@type": "NewsArticle", "headline": "Deep"}' + "]" * 100_000
    return {
        "/tiny-elements": _page("<p>" + "<b>x</b>" * 100_000 + "</p>"),
        "/nested-divs": _page("<div>" * 100_000 + ARTICLE + "</div>" * 100_000),
        "/br-elements": _page("<p>" + "x<br>" * 30_000 + "</p>"),
        "/text-node": _page(ARTICLE + "<p>" + "x" * 9_000_000 + "</p>"),
        "/ld-headline": _page(
            ARTICLE,
            f'<script type="application/ld+json">{{"@type": '
            f'"NewsArticle", "headline": "{HUGE}"}}</script>',
        ),
        "/og-title": _page(ARTICLE, f'<meta property="og:title" content="{HUGE}">'),
        "/deep-json-ld": _page(ARTICLE, f'<script type="application/ld+json">{deep}</script>'),
        "/canonical": _page(ARTICLE, f'<link rel="canonical" href="https://a.test/{"a" * 5000}">'),
    }


def fetch_and_clean(fetcher: Fetcher, url: str) -> str:
    """The fetch stage's reason, or the clean stage's: an article's field lengths or
    the reason there is none."""
    from newsq.clean.extract import extract
    from newsq.clean.limits import CleanLimits
    from newsq.records import Drop

    result = fetcher.fetch(url)
    if not result.ok or result.text is None:
        return f"{result.reason} (HTTP {result.status})"
    cleaned = extract(result.text, url, CleanLimits.from_settings(fetcher.settings))
    if isinstance(cleaned, Drop):
        return f"skipped/{cleaned.reason}: {cleaned.detail}"
    canonical = len(cleaned.canonical_url or "")
    return (f"article: title {len(cleaned.title or '')} chars, text {len(cleaned.text)}, "
            f"canonical URL {canonical}")  # fmt: skip


def page_cases(fetcher: Fetcher, server: HostileServer, base: str) -> Iterator[Case]:
    def page(name: str, url: str, expected: str) -> Case:
        return Case("page", name, expected, lambda: fetch_and_clean(fetcher, url))

    for path, reason, status in HOSTILE_CASES:
        yield page(path.strip("/"), server.url(path), re.escape(f"{reason} (HTTP {status})"))
    for path in ("/wrong-charset", "/unknown-charset", "/meta-charset"):
        yield page(path.strip("/"), server.url(path), "skipped/no_content")  # decoded, short
    yield page("100,000 tiny elements", f"{base}/tiny-elements", "skipped/too_complex")
    yield page("100,000 nested <div>s", f"{base}/nested-divs", "skipped/too_complex")
    yield page("30,000 <br> (few tags)", f"{base}/br-elements", "skipped/too_complex")
    yield page("9 MB text node", f"{base}/text-node", "article")
    capped = f"article: title ({TITLE_MAX}|{TITLE_MAX // 10 - 1}\\d) chars"  # cut at a word
    yield page("5 MB JSON-LD headline", f"{base}/ld-headline", capped)
    yield page("5 MB og:title", f"{base}/og-title", capped)
    yield page("JSON-LD 100,000 deep", f"{base}/deep-json-ld", "article: title 6 chars")
    yield page("5,000-character canonical", f"{base}/canonical",
               "article: .*canonical URL \\d\\d$")  # the page's own, not the 5,000  # fmt: skip


def _shown(line: bytes) -> str:
    """A header line as the table shows it: what cannot be seen, escaped."""
    text = line.decode("utf-8", "replace")
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def header_cases(fetcher: Fetcher, server: HostileServer) -> Iterator[Case]:
    for status, lines, (ok, reason, _) in RAW_CASES:
        name = " / ".join(map(_shown, lines))
        url = server.url(raw_path(status, *lines))
        expected = re.escape("ok" if ok else f"{reason or 'connection_error'}")

        def outcome(url: str = url) -> str:
            result = fetcher.fetch(url)
            return f"{result.reason or 'ok'} (HTTP {result.status})"

        yield Case("header", name, expected, outcome)


def address_cases(server: HostileServer) -> Iterator[Case]:
    """Spellings of the server's own loopback address, under the default settings, and
    redirects from the server (allowed alone) to addresses that are not public: each
    ends ``blocked_address`` without a connection to where it points."""
    port = server.port
    guarded = Fetcher(Settings(fetch_timeout=1.0))
    one_port = Fetcher(Settings(fetch_timeout=1.0,
                                allow_private=AllowPrivate.parse(f"127.0.0.1:{port}")))  # fmt: skip
    spellings = ["localhost", "127.1", "2130706433", "0x7f.1", "[::ffff:127.0.0.1]",
                 "[::127.0.0.1]", "[2002:7f00:1::]", "[64:ff9b::7f00:1]"]  # fmt: skip
    targets = [(f"http://{host}:{port}/ok", guarded) for host in spellings]
    targets += [(url, guarded) for url in ("http://[fec0::1]/", "http://0.0.0.0/",
                                           "http://169.254.169.254/latest/meta-data/")]  # fmt: skip
    names = {}
    for to in ("http://127.0.0.1:9/", "http://169.254.169.254/", "http://[::1]/"):
        targets.append((server.url(f"/redirect-to?url={quote(to)}"), one_port))
        names[targets[-1][0]] = f"redirect to {to}"

    for url, fetcher in targets:

        def outcome(url: str = url, fetcher: Fetcher = fetcher) -> str:
            before = server.connections
            result = fetcher.fetch(url)
            opened = server.connections - before - ("redirect-to" in url)  # its own hop
            return f"{result.reason or 'ok'}, {opened} connections"

        yield Case("address", names.get(url, url.replace(str(port), "PORT")),
                   "blocked_address, 0 connections", outcome)  # fmt: skip


# -- settings and files, through the CLI ---------------------------------------------------


def cli(*args: str, env: dict[str, str] | None = None) -> str:
    """``newsq ARGS`` in this process: its exit code and the first line it printed."""
    from newsq.workers.cli import main

    saved = {k: v for k, v in os.environ.items() if k.startswith("NEWSQ_")}
    for key in saved:
        del os.environ[key]
    os.environ.update(env or {})
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        for key in env or {}:
            os.environ.pop(key, None)
        os.environ.update(saved)
    lines = err.getvalue().splitlines() + [_article(line) for line in out.getvalue().splitlines()]
    more = f" (+{len(lines) - 1} lines)" if len(lines) > 1 else ""
    return f"exit {code}: {lines[0] if lines else ''}{more}"


def _article(line: str) -> str:
    """One line of ``newsq extract``: its path and the text's start, or its reason."""
    out = json.loads(line)
    if out.get("reason"):
        return f"{out['path']}: {out['reason']}"
    return f"{out['path']}: article {out['title']!r}, text {out['text'][:40]!r}"


BAD_SETTINGS = [
    ("NEWSQ_LOG_LEVEL", "garbage"),
    ("NEWSQ_MAX_BYTES", "inf"),
    ("NEWSQ_FETCH_TIMEOUT", "1e300"),
    ("NEWSQ_HOST_RATE", "nan"),
    ("NEWSQ_VISIBILITY_TIMEOUT", "-1"),
    ("NEWSQ_DEDUP_CAPACITY", "1e12"),
    ("NEWSQ_DATABASE_URL", "postgresql://newsq@db:pg/news"),
    ("NEWSQ_DATABASE_URL", "postgresql://newsq:secret@db:99999/news"),
    ("NEWSQ_BROKER_URL", "redis://cache:63x9/0"),
    ("NEWSQ_BROKER_URL", "redis://cache:70000"),
    ("NEWSQ_BROKER_URL", "redis://cache/0?socket_timeout=inf"),
    ("NEWSQ_METRICS_PORT", "99999"),
    ("NEWSQ_METRICS_ADDR", "local host"),
    ("NEWSQ_USER_AGENT", "newsq\nX-Injected: 1"),
    ("NEWSQ_KEY_PREFIX", "news\udcffq"),
    ("NEWSQ_CELERY_CONFIG", ".settings"),
    ("NEWSQ_ALLOW_PRIVATE", "10.0.0.0/33"),
    ("NEWSQ_ROBOTS", "of"),
]


def sweep() -> str:
    """Every setting given every garbage value: how many were refused in one line."""
    values = ["garbage", "inf", "-inf", "nan", "-1", "0", "1e400", "9" * 30, "", "a\nb",
              "\x00", "\udcff", "%", "[", "::", "redis://h:abc", "sqlite:", "unix://"]  # fmt: skip
    refused = accepted = unnamed = raised = 0
    for spec in SETTINGS:
        for raw in values:
            try:
                Settings.from_env({spec.env: raw})
                accepted += 1
            except ConfigError as exc:
                named = str(exc).startswith(f"{spec.env}: ") and "\n" not in str(exc)
                refused, unnamed = refused + named, unnamed + (not named)
            except Exception:
                raised += 1
    return (f"{refused} refused in one line, {accepted} accepted, {unnamed} other errors, "
            f"{raised} raised")  # fmt: skip


def setting_cases() -> Iterator[Case]:
    for env, value in BAD_SETTINGS:
        yield Case("setting", f"{env}={value!r}", f"exit 2: newsq: {env}: ",
                   partial(cli, "status", env={env: value}))  # fmt: skip
    every = r"\d+ refused in one line, \d+ accepted, 0 other errors, 0 raised$"
    yield Case("setting", f"every setting × 18 values ({len(SETTINGS)} settings)", every, sweep)


def file_cases(folder: Path) -> Iterator[Case]:
    quotes = "<p>“A curly quote,” she said — and the article goes on, and on.</p>"
    article = "".join(quotes.replace("curly", f"curly {i}") for i in range(8))
    files = {
        "not-gzip.html.gz": b"<html>" + b"x" * 200 + b"</html>",
        "truncated.html.gz": gzip.compress(_page(ARTICLE) * 20)[:100],
        "binary.html": bytes(range(256)) * 8,
        "bomb.html.gz": gzip.compress(bytes(100_000_000), 1),
        "deep-json-ld.html": page_pages()["/deep-json-ld"],
        "latin1-is-cp1252.html": _page(f"<article>{article}</article>",
                                       '<meta charset="iso-8859-1">').decode().encode("cp1252"),
    }  # fmt: skip
    for name, body in files.items():
        (folder / name).write_bytes(body)
    (folder / "a-folder").mkdir()
    expected = {
        "not-gzip.html.gz": "exit 2: newsq: not-gzip.html.gz: not a gzip file",
        "truncated.html.gz": "exit 2: newsq: truncated.html.gz: a truncated gzip file",
        "binary.html": "exit 2: newsq: binary.html: decode_error",
        "bomb.html.gz": "exit 2: newsq: bomb.html.gz: over NEWSQ_MAX_BYTES",
        "deep-json-ld.html": "exit 0: deep-json-ld.html: article 'A page', text 'A sentence",
        "latin1-is-cp1252.html": "exit 0: latin1-is-cp1252.html: article 'A page', "
                                 "text '“A curly 0 quote,” she said — and",
        "a-folder": "exit 2: newsq: cannot read a-folder: Is a directory",
        "missing.html": "exit 2: newsq: cannot read missing.html: No such file",
        "/dev/zero": "exit 2: newsq: /dev/zero: over NEWSQ_MAX_BYTES",
    }  # fmt: skip
    for name, starts in expected.items():
        yield Case("file", f"extract {name}", starts, partial(cli, "extract", name))
    yield Case("file", "extract deep-json-ld.html missing.html", "exit 1: newsq: cannot read",
               partial(cli, "extract", "deep-json-ld.html", "missing.html"))  # fmt: skip
    yield Case("file", "extract --url '::'", "exit 2: newsq: --url: ",
               partial(cli, "extract", "deep-json-ld.html", "--url", "::"))  # fmt: skip
    for name, says in [("/dev/zero", "URL file /dev/zero: a line over"),
                       ("binary.html", "cannot read URL file binary.html: 'utf-8' codec"),
                       ("a-folder", "cannot read URL file a-folder: .*directory")]:  # fmt: skip
        yield Case("file", f"--urls {name}", says, partial(url_file, name))
    store = f"sqlite:///{folder / 'newsq.db'}"  # made empty: export has a store to read
    for fmt, out, says in [("jsonl", "gone/o.jsonl", "No such file"),
                           ("parquet", "gone/o.parquet", "No such file"),
                           ("parquet", "/dev/full", "No space left on device")]:  # fmt: skip
        yield Case("file", f"export --format {fmt} --out {out}",
                   f"exit 2: newsq: cannot write {out}: {says}",
                   partial(cli, "export", "--format", fmt, "--out", out,
                           env={"NEWSQ_DATABASE_URL": store}))  # fmt: skip


def url_file(path: str) -> str:
    """What ``newsq run --urls PATH`` reads of a file: its URLs, or the one line."""
    from newsq.feeds.intake import read_url_file

    try:
        return f"{len(read_url_file(path))} URLs"
    except ConfigError as exc:
        return str(exc)


# -- the report --------------------------------------------------------------------------


def print_table(rows: list[Row]) -> None:
    print("| input | case | outcome | seconds | as expected |")
    print("|---|---|---|---|---|")
    for row in rows:
        shown = row.outcome if len(row.outcome) <= 110 else row.outcome[:109] + "…"
        case, shown = (text.replace("|", "\\|") for text in (row.case.name, shown))
        print(f"| {row.case.group} | {case} | {shown} | {row.seconds:.2f} "
              f"| {'yes' if row.passed else 'NO'} |")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--timeout", type=float, default=1.0, help="fetch_timeout, seconds")
    args = parser.parse_args()
    import logging

    logging.disable(logging.WARNING)  # the cases' own log lines are not the report
    settings = Settings(allow_private=AllowPrivate(all=True), fetch_timeout=args.timeout,
                        host_rate=0.0)  # fmt: skip
    pages = {**feed_pages(), **page_pages()}
    started = time.perf_counter()
    with QuietServer() as server, serve_pages(pages) as base, Fetcher(settings) as fetcher, \
            tempfile.TemporaryDirectory() as folder:  # fmt: skip
        pages["/loop-a.xml"] = _index(f"{base}/loop-b.xml")
        pages["/loop-b.xml"] = _index(f"{base}/loop-a.xml")
        cases = [*feed_cases(fetcher, server, base), *page_cases(fetcher, server, base),
                 *header_cases(fetcher, server), *address_cases(server)]  # fmt: skip
        rows = [timed(case) for case in cases]
        os.chdir(folder)  # newsq extract's paths, and no store made where it was run
        from newsq.store.database import Store

        Store.from_url(f"sqlite:///{Path(folder) / 'newsq.db'}").close()
        rows += [timed(case) for case in [*setting_cases(), *file_cases(Path(folder))]]
        os.chdir(ROOT)
    total = time.perf_counter() - started
    print(f"## Hostile inputs (fetch_timeout={args.timeout:g} s, other settings default)\n")
    print_table(rows)
    failed = [row for row in rows if not row.passed]
    raised = [row for row in rows if row.outcome.startswith("RAISED")]
    slowest = max(rows, key=lambda row: row.seconds)
    print(f"\n{len(rows)} cases in {total:.1f} s: {len(rows) - len(failed)} as expected, "
          f"{len(raised)} raised; slowest: {slowest.case.name}, "
          f"{slowest.seconds:.2f} s")  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
