"""Builds the pages and the truth of the sample news site (see ``newsq.demo.site``).

The :class:`Builder` walks the steps in order, all from one seeded RNG: stories and
their syndicated copies, exact variants, hard negatives, briefs, broken links, then
each outlet's feed, home page and robots.txt.
"""

from __future__ import annotations

import gzip
import json
import math
import random
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path
from typing import TYPE_CHECKING

from newsq import errors
from newsq.clean.extract import parse
from newsq.clean.metadata import extract_metadata
from newsq.demo.edits import ALL_EDITS, Copy, syndicate
from newsq.demo.pages import (
    BRIEF_TOPICS,
    SECTIONS,
    PageInfo,
    Style,
    amp_html,
    article_html,
    base_token,
    brief_paragraphs,
    index_html,
    make_styles,
    rss_xml,
    video_html,
)

if TYPE_CHECKING:
    from newsq.demo.site import SiteSpec

HTML = "text/html; charset=utf-8"
EPOCH = datetime(2019, 11, 18, 6, 0, tzinfo=UTC)
BRIEFS_PER_DOC = 2
"""Member briefs per corpus story set apart for them (up to 3 are taken when some
stories have too few sentences)."""
MIN_SYNDICATED_PARAGRAPHS = 4
"""Shorter stories are not syndicated: a few edits would leave too little shared text."""


@dataclass(frozen=True)
class Resource:
    """One response of an outlet's server; ``str`` bodies hold base-URL placeholders."""

    status: int
    content_type: str
    body: str | bytes = b""
    location: str | None = None


@dataclass(frozen=True)
class Entry:
    """One URL the site hands out, and what newsq should make of it."""

    outlet: int
    path: str
    story: str | None
    kind: str
    """original, syndicated, tracking, amp, redirect, negative, brief, or a broken kind."""
    state: str
    reason: str | None = None
    in_feed: bool = True
    edits: tuple[str, ...] = ()
    title: str = ""
    published: datetime = EPOCH

    def url(self, bases: list[str]) -> str:
        return bases[self.outlet] + self.path


@dataclass
class _Story:
    key: str
    original: Copy
    author: str
    published: datetime
    html: bytes
    section: str


_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"\u201c])")


def brief_sentences(gold: dict[str, str], rng: random.Random, count: int) -> list[str]:
    """Up to ``count`` spans of one or two consecutive sentences (12 to 45 words), each
    from another paragraph past the lead of a gold text."""
    paras = [p.strip() for p in gold["articleBody"].split("\n") if p.strip()][2:]
    out = []
    for para in rng.sample(paras, len(paras)):
        sentences = _SENTENCE.split(para)
        spans = [
            " ".join(sentences[i : i + k])
            for i in range(len(sentences))
            for k in (1, 2)
            if i + k <= len(sentences) and 12 <= len(" ".join(sentences[i : i + k]).split()) <= 45
        ]
        if spans:
            out.append(rng.choice(spans))
        if len(out) == count:
            break
    return out


def brief_docs(member_briefs: int) -> int:
    """Corpus stories set apart for ``member_briefs`` briefs (which must come from
    stories not on the site: one sentence of a story is a trimmed copy of it)."""
    return math.ceil(member_briefs / BRIEFS_PER_DOC)


def _slug(text: str) -> str:
    return "-".join(re.findall(r"[a-z0-9]+", text.lower())[:8]) or "story"


def _when(value: str | None, fallback: datetime) -> datetime:
    try:
        when = datetime.fromisoformat(value) if value else fallback
    except ValueError:
        return fallback
    return when if when.tzinfo else when.replace(tzinfo=UTC)


class Builder:
    """Generates ``entries`` (the truth) and ``routes`` (path → response per outlet)."""

    def __init__(self, spec: SiteSpec, corpus: Path) -> None:
        if spec.outlets < 1 or spec.stories < 1:
            raise ValueError("a sample site needs at least one outlet and one story")
        if unknown := set(spec.edits) - set(ALL_EDITS):
            raise ValueError(f"unknown edits {sorted(unknown)}; known: {', '.join(ALL_EDITS)}")
        if spec.briefs > BRIEF_TOPICS:
            raise ValueError(f"at most {BRIEF_TOPICS} briefs: each must be different news")
        self.spec = spec
        self.corpus = corpus
        self.rng = random.Random(spec.seed)
        self.styles: list[Style] = make_styles(spec.outlets, about_box=spec.member_briefs > 0)
        self.names = [s.name for s in self.styles]
        self.entries: list[Entry] = []
        self.routes: list[dict[str, Resource]] = [{} for _ in self.styles]
        # rendered last, once related links can be drawn: style, path, page, AMP canonical
        self._pages: list[tuple[Style, str, PageInfo, str | None]] = []
        self._serial = 0

    def run(self) -> None:
        gold = json.loads((self.corpus / "ground-truth.json").read_text(encoding="utf-8"))
        ids = sorted(gold)
        self.rng.shuffle(ids)
        wanted = self.spec.stories + self.spec.negatives
        spare = ids[wanted:]  # the member briefs' sentences come from stories not on the site
        if wanted + brief_docs(self.spec.member_briefs) > len(ids):
            raise ValueError(f"{wanted} stories and negatives and {self.spec.member_briefs} "
                             f"member briefs asked, the corpus has {len(ids)} stories")  # fmt: skip
        # 1. stories and their syndicated copies
        stories = [self._story(i, ids[i], gold[ids[i]]) for i in range(self.spec.stories)]
        originals = {s.key: self._publish(s) for s in stories}
        # 2. exact copies under other URLs
        if self.spec.exact_variants:
            self._variants(stories, originals)
        # 3. hard negatives: other stories, one copy each, on the same templates
        for i in range(self.spec.stories, wanted):
            story = self._story(i, ids[i], gold[ids[i]])
            self._page(self.rng.randrange(len(self.styles)), story, story.original, "negative")
        for n in range(self.spec.briefs):
            self._brief(n)
        if self.spec.member_briefs:
            self._member_briefs(gold, spare)
        # 4. broken links
        if self.spec.broken:
            self._broken()
        # 5. render pages, feeds, home pages
        for style, path, info, canonical in self._pages:
            info = self._with_related(style, info)
            html = amp_html(style, info, canonical) if canonical else article_html(style, info)
            self.routes[style.index].setdefault(path, Resource(200, HTML, html))
        for style in self.styles:
            self._feed(style)

    # -- stories ----------------------------------------------------------------------

    def _story(self, n: int, doc: str, gold: dict[str, str]) -> _Story:
        raw = gzip.decompress((self.corpus / "html" / f"{doc}.html.gz").read_bytes())
        tree = parse(raw.decode("utf-8", errors="replace"))
        meta = extract_metadata(tree, gold.get("url")) if tree is not None else None
        paras = tuple(p.strip() for p in gold["articleBody"].split("\n") if p.strip())
        # some corpus pages escape their titles twice
        title = unescape(meta.title if meta and meta.title else paras[0].split(". ")[0][:90])
        published = EPOCH + timedelta(minutes=self.rng.randrange(0, 3 * 24 * 60))
        return _Story(
            key=f"s{n:03d}-{doc[:8]}",
            original=Copy(title, paras),
            author=(meta.author if meta else None) or "Staff Writer",
            published=_when(meta.published if meta else None, published),
            html=raw,
            section=self.rng.choice(SECTIONS),
        )

    def _path(self, style: Style, story: _Story, headline: str) -> str:
        self._serial += 1
        slug, d, sec = _slug(headline), story.published, story.section
        return (
            f"/{sec}/{d:%Y/%m/%d}/{slug}.html",
            f"/story/{slug}-{1000 + self._serial}",
            f"/{d:%Y/%m/%d}/{sec}/{slug}/",
            f"/article/{self._serial}/{slug}.html",
        )[style.template]

    def _page(self, outlet: int, story: _Story, copy: Copy, kind: str,
              published: datetime | None = None, author: str | None = None,
              corpus_html: bool = False) -> Entry:  # fmt: skip
        style = self.styles[outlet]
        path = self._path(style, story, copy.headline)
        when = published or story.published
        info = PageInfo(style.base + path, copy.headline, copy.paragraphs,
                        author or story.author, when, story.section)  # fmt: skip
        if corpus_html:
            self.routes[outlet][path] = Resource(200, HTML, story.html)
        else:
            self._pages.append((style, path, info, None))
        entry = Entry(outlet, path, story.key, kind, "article", edits=copy.edits,
                      title=copy.headline, published=when)  # fmt: skip
        self.entries.append(entry)
        return entry

    def _publish(self, story: _Story) -> Entry:
        """The original at a home outlet, syndicated copies at some others."""
        home = self.rng.randrange(len(self.styles))
        low, high = self.spec.copies_per_story
        copies = min(self.rng.randint(low, high), len(self.styles))
        if len(story.original.paragraphs) < MIN_SYNDICATED_PARAGRAPHS:
            copies = 1
        original = self._page(home, story, story.original, "original",
                              corpus_html=self.spec.use_corpus_html)  # fmt: skip
        others = [i for i in range(len(self.styles)) if i != home]
        for outlet in self.rng.sample(others, copies - 1):
            copy = syndicate(story.original, self.rng, self.spec.edits)
            wire = "wire_credit" in copy.edits
            author = self.rng.choice(("Associated Press", "Reuters")) if wire else None
            later = story.published + timedelta(minutes=self.rng.randrange(20, 30 * 60))
            self._page(outlet, story, copy, "syndicated", later, author)
        return original

    def _variants(self, stories: list[_Story], originals: dict[str, Entry]) -> None:
        """Tracking-parameter, AMP and redirect copies of a few originals."""
        count = max(1, len(stories) // 8)
        for kind in ("utm", "fbclid", "amp", "redirect"):
            for story in self.rng.sample(stories, count):
                orig = originals[story.key]
                if kind == "utm":
                    path = orig.path + "?utm_source=rss&utm_medium=feed&utm_campaign=daily"
                elif kind == "fbclid":
                    path = orig.path + f"?fbclid=IwAR{self.rng.getrandbits(64):016x}"
                elif kind == "amp":
                    path = "/amp" + orig.path
                    canonical = base_token(orig.outlet) + orig.path
                    style = self.styles[orig.outlet]
                    info = PageInfo(style.base + path, story.original.headline,
                                    story.original.paragraphs, story.author,
                                    story.published, story.section)  # fmt: skip
                    self._pages.append((style, path, info, canonical))
                else:
                    path = f"/r/{self.rng.getrandbits(40):010x}"
                    target = base_token(orig.outlet) + orig.path
                    self.routes[orig.outlet][path] = Resource(302, HTML, b"", target)
                self.entries.append(Entry(orig.outlet, path, story.key,
                                          "tracking" if kind in ("utm", "fbclid") else kind,
                                          "article", in_feed=False))  # fmt: skip
        # one outlet tags its feed links for analytics, as many do
        if len(self.styles) > 1:
            self.entries = [
                replace(e, path=e.path + "?utm_source=rss&utm_medium=feed")
                if e.outlet == 1 and e.in_feed and e.kind == "original" and "?" not in e.path
                else e
                for e in self.entries
            ]

    def _brief(self, n: int) -> None:
        headline, text = brief_paragraphs(self.rng, n)
        story = _Story(f"brief{n:03d}", Copy(headline, (text,)), "Staff Writer",
                       EPOCH + timedelta(minutes=self.rng.randrange(0, 3 * 24 * 60)), b"",
                       "news")  # fmt: skip
        self._page(self.rng.randrange(len(self.styles)), story, story.original, "brief")

    def _member_briefs(self, gold: dict[str, dict[str, str]], spare: list[str]) -> None:
        """Briefs of one or two real sentences, from corpus stories not on the site
        (``spare``), at one outlet each; about one in four is syndicated word for word
        to one or two others. With the outlets' about-us box they are mostly furniture,
        and a one-sentence brief whose headline is that sentence comes out as nothing
        else (its repeat of the headline is dropped)."""
        wanted = self.spec.member_briefs
        texts: list[str] = []
        for doc in spare:
            texts += brief_sentences(gold[doc], self.rng, min(3, wanted - len(texts)))
            if len(texts) == wanted:
                break
        if len(texts) < wanted:
            raise ValueError(f"{wanted} member briefs asked, the spare stories give {len(texts)}")
        for n, text in enumerate(texts):
            headline = " ".join(text.split()[:8]).rstrip(",.;:") + "..."
            if len(_SENTENCE.split(text)) == 1 and self.rng.random() < 0.4:
                headline = text  # a brief whose headline is its news, repeated as its body
            when = EPOCH + timedelta(minutes=self.rng.randrange(0, 3 * 24 * 60))
            story = _Story(f"mbrief{n:03d}", Copy(headline, (text,)), "Staff Writer", when,
                           b"", "news")  # fmt: skip
            home = self.rng.randrange(len(self.styles))
            self._page(home, story, story.original, "brief")
            others = [i for i in range(len(self.styles)) if i != home]
            if others and self.rng.random() < 0.25:
                for outlet in self.rng.sample(others, min(len(others), self.rng.randint(1, 2))):
                    later = when + timedelta(minutes=self.rng.randrange(20, 600))
                    self._page(outlet, story, Copy(headline, (text,)), "brief", later)

    def _broken(self) -> None:
        """A 404 and a PDF in feeds, a video page without article, an image, a 500."""
        o = len(self.styles)
        broken = [
            (0, "/news/2019/11/17/removed-story.html", "missing", "failed", errors.HTTP_ERROR,
             True, None),
            (1 % o, "/files/annual-report-2019.pdf", "pdf", "skipped", errors.BAD_CONTENT_TYPE,
             True, Resource(200, "application/pdf", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n")),
            (2 % o, "/video/2019/11/19/highlights", "video", "skipped", errors.NO_CONTENT,
             True, None),
            (3 % o, "/images/2019/11/photo-1.png", "image", "skipped", errors.BAD_CONTENT_TYPE,
             False, Resource(200, "image/png", b"\x89PNG\r\n\x1a\n" + bytes(64))),
            (0, "/old/2018/03/link-rot.html", "missing", "failed", errors.HTTP_ERROR,
             False, None),
        ]  # fmt: skip
        if self.spec.server_error:
            broken.append((1 % o, "/live/2019/11/19/blog", "error", "failed", errors.HTTP_ERROR,
                           False, Resource(500, HTML, b"<h1>Server Error</h1>")))  # fmt: skip
        for outlet, path, kind, state, reason, in_feed, res in broken:
            title = "Watch: the week in 90 seconds" if kind == "video" else f"{kind}: {path}"
            if kind == "video":
                style = self.styles[outlet]
                info = PageInfo(style.base + path, title, ("the week in 90 seconds",),
                                "Video Desk", EPOCH, "news")  # fmt: skip
                res = Resource(200, HTML, video_html(style, info))
            if res is not None:
                self.routes[outlet][path] = res
            self.entries.append(Entry(outlet, path, None, kind, state, reason, in_feed,
                                      title=title))  # fmt: skip

    # -- feeds and home pages ---------------------------------------------------------

    def _with_related(self, style: Style, info: PageInfo) -> PageInfo:
        mine = [e for e in self.entries if e.outlet == style.index and e.story and e.title
                and e.in_feed and style.base + e.path != info.url]  # fmt: skip
        picks = self.rng.sample(mine, min(3, len(mine)))
        related = tuple((e.title, style.base + e.path) for e in picks)
        return replace(info, related=related)

    def _feed(self, style: Style) -> None:
        mine = [e for e in self.entries if e.outlet == style.index and e.in_feed]
        mine.sort(key=lambda e: e.published, reverse=True)
        items = [(e.title, style.base + e.path, e.published, e.title) for e in mine]
        routes = self.routes[style.index]
        routes["/feed.xml"] = Resource(200, "application/rss+xml; charset=utf-8",
                                       rss_xml(style, items))  # fmt: skip
        routes["/"] = Resource(200, HTML, index_html(style, [(t, u) for t, u, _, _ in items]))
        routes["/robots.txt"] = Resource(200, "text/plain", "User-agent: *\nAllow: /\n")
