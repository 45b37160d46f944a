"""Page templates of the sample news site: four outlet styles, AMP, briefs, RSS.

Every outlet wraps its articles in its own markup (header, navigation, newsletter
promotion, "about us" blurb, related links, footer) with its own tag structure and
class names, so a cleaner cannot lean on one template. Absolute URLs are written with
:func:`base_token` placeholders, since ports are known only once the site is served.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from html import escape

NAMES = (
    "The Daily Ledger",
    "Metro Wire",
    "Harbor Courier",
    "Valley Post",
    "Northern Gazette",
    "City Tribune",
    "Coastal Times",
    "Prairie Herald",
)
SECTIONS = ("news", "politics", "business", "tech", "culture", "sport", "world")


def base_token(outlet: int) -> str:
    """The placeholder for outlet ``outlet``'s base URL, replaced when the site is served."""
    return f"@@BASE{outlet}@@"


@dataclass(frozen=True)
class Style:
    """What one outlet looks like: name, template number and boilerplate text."""

    index: int
    name: str
    template: int
    about_box: bool = False
    """Every article page carries the "about us" blurb and the membership appeal in
    its article container, after the text, as syndication networks' pages do."""

    @property
    def base(self) -> str:
        return base_token(self.index)

    @property
    def promo(self) -> str:
        return (
            f"Get the best of {self.name} delivered to your inbox every morning. Sign up for "
            "our free newsletter and never miss the stories that matter to you and your family."
        )

    @property
    def about(self) -> str:
        return (
            f"{self.name} is an independent news organisation covering local and national "
            "news, politics, business, culture and sport. Our journalism is supported by "
            "readers like you: subscribe today to help us keep reporting."
        )

    @property
    def appeal(self) -> str:
        return (
            f"Become a member of {self.name}. Members keep our newsroom independent and our "
            "reporting free for everyone to read. Join today from $5 a month and get the "
            "members' briefing, invitations to our events and a say in what we cover next."
        )

    def box(self) -> str:
        """The about-us box of an article container (empty unless ``about_box``)."""
        if not self.about_box:
            return ""
        return f'<div class="about-box"><p>{self.about}</p><p>{self.appeal}</p></div>'


def make_styles(count: int, about_box: bool = False) -> list[Style]:
    """``count`` outlets, the four templates in turn."""
    return [
        Style(i, NAMES[i] if i < len(NAMES) else f"Outlet {i + 1} News", i % 4, about_box)
        for i in range(count)
    ]


@dataclass(frozen=True)
class PageInfo:
    """What an article page shows; ``url`` is absolute, with a base placeholder."""

    url: str
    headline: str
    paragraphs: tuple[str, ...]
    author: str
    published: datetime
    section: str
    related: tuple[tuple[str, str], ...] = ()


def _head(style: Style, page: PageInfo, amp: bool = False, canonical: str | None = None) -> str:
    ld = {
        "@context": "https://schema.org",
        "@type": "NewsArticle",
        "headline": page.headline,
        "author": {"@type": "Person", "name": page.author},
        "datePublished": page.published.isoformat(),
        "publisher": {"@type": "Organization", "name": style.name},
        "mainEntityOfPage": canonical or page.url,
    }
    h = escape(page.headline)
    return (
        f'<head><meta charset="utf-8"><title>{h} | {escape(style.name)}</title>'
        f'<meta name="viewport" content="width=device-width,initial-scale=1">'
        f'<meta property="og:title" content="{h}">'
        f'<meta property="og:type" content="article">'
        f'<meta property="og:site_name" content="{escape(style.name)}">'
        f'<meta property="og:url" content="{escape(canonical or page.url)}">'
        f'<meta name="author" content="{escape(page.author)}">'
        f'<meta property="article:published_time" content="{page.published.isoformat()}">'
        f'<link rel="canonical" href="{escape(canonical or page.url)}">'
        + ("" if amp else f'<link rel="alternate" type="application/rss+xml" '
           f'href="{style.base}/feed.xml">')
        + f'<script type="application/ld+json">{json.dumps(ld)}</script></head>'
    )  # fmt: skip


def _paras(paragraphs: tuple[str, ...], cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return "".join(f"<p{attr}>{escape(p)}</p>" for p in paragraphs)


def _nav(style: Style, tag: str = "li") -> str:
    items = "".join(f'<{tag}><a href="{style.base}/{s}/">{s.title()}</a></{tag}>' for s in SECTIONS)
    return items


def _related(page: PageInfo, tag: str = "li") -> str:
    return "".join(f'<{tag}><a href="{u}">{escape(t)}</a></{tag}>' for t, u in page.related)


def _date(page: PageInfo) -> str:
    return f'<time datetime="{page.published.isoformat()}">{page.published:%B %d, %Y}</time>'


def _classic(style: Style, page: PageInfo) -> str:
    return (
        f'<body class="article-page"><header class="masthead"><a class="logo" href="{style.base}/">'
        f'{escape(style.name)}</a><nav class="main-nav"><ul>{_nav(style)}</ul></nav></header>'
        f'<main id="content"><article class="story"><h1 class="story-headline">'
        f'{escape(page.headline)}</h1><p class="byline">By <span class="author">'
        f"{escape(page.author)}</span> · {_date(page)}</p>"
        f'<div class="story-body">{_paras(page.paragraphs)}{style.box()}</div>'
        f'<aside class="newsletter"><h3>Morning Briefing</h3><p>{style.promo}</p>'
        f'<form><input type="email" placeholder="Email"><button>Sign up</button></form></aside>'
        f'<section class="related"><h2>Related</h2><ul>{_related(page)}</ul></section></article>'
        f'</main><footer class="site-footer"><p class="about">{style.about}</p>'
        f"<p>© 2019 {escape(style.name)}. All rights reserved.</p></footer></body>"
    )


def _divsoup(style: Style, page: PageInfo) -> str:
    paras = list(page.paragraphs)
    mid = max(1, len(paras) // 2)
    ad = '<div class="ad-slot"><span>Advertisement</span></div>'
    more = ""
    if page.related:
        title, url = page.related[0]
        link = f'<a href="{url}">{escape(title)}</a>'
        more = f'<p class="read-more"><strong>Read more:</strong> {link}</p>'
    body = _paras(tuple(paras[:mid]), "txt") + ad + more + _paras(tuple(paras[mid:]), "txt")
    return (
        f'<body><div id="page"><div class="top-bar"><div class="brand">{escape(style.name)}</div>'
        f'<div class="menu">{_nav(style, "span")}</div></div><div class="content-wrap">'
        f'<div class="article-title"><h1>{escape(page.headline)}</h1></div>'
        f'<div class="meta-line"><span class="by">{escape(page.author)}</span> {_date(page)}</div>'
        f'<div class="entry-content">{body}{style.box()}</div>'
        f'<div class="promo-box"><p>{style.promo}</p></div>'
        f'<div class="more-stories"><div class="hd">More from {escape(style.name)}</div>'
        f'{_related(page, "div")}</div></div>'
        f'<div class="bottom"><div class="about-us">{style.about}</div>'
        f'<div class="legal">Terms · Privacy · Contact</div></div></div></body>'
    )  # fmt: skip


def _modern(style: Style, page: PageInfo) -> str:
    section = f'<a href="{style.base}/{page.section}/">{page.section.title()}</a>'
    crumbs = f'<a href="{style.base}/">Home</a> › {section}'
    return (
        f'<body><div class="app"><header role="banner">'
        f'<h2 class="site-name">{escape(style.name)}</h2>'
        f'<nav aria-label="Sections"><ul class="nav-list">{_nav(style)}</ul></nav></header>'
        f'<nav class="breadcrumbs">{crumbs}</nav><section class="article-section">'
        f'<header class="article-header"><h1 itemprop="headline">{escape(page.headline)}</h1>'
        f'<div class="share"><button>Share</button><button>Tweet</button>'
        f"<button>Email</button></div>"
        f'<address class="author-name">{escape(page.author)}</address>{_date(page)}</header>'
        f'<figure class="lead-image"><img src="{style.base}/img/lead.jpg" alt="">'
        f"<figcaption>Photo: {escape(style.name)} staff</figcaption></figure>"
        f'<div itemprop="articleBody" class="article-content">{_paras(page.paragraphs)}'
        f"{style.box()}</div>"
        f'</section><section class="signup"><p>{style.promo}</p></section>'
        f'<aside class="trending"><h3>Trending</h3><ol>{_related(page)}</ol></aside>'
        f'<footer role="contentinfo"><section class="about"><p>{style.about}</p></section>'
        f"<small>Copyright 2019 {escape(style.name)}</small></footer></div></body>"
    )  # fmt: skip


def _legacy(style: Style, page: PageInfo) -> str:
    paras = list(page.paragraphs)
    inline = f'<p class="inline-promo"><em>{style.promo}</em></p>'
    body = _paras(tuple(paras[:2])) + (inline if len(paras) > 3 else "") + _paras(tuple(paras[2:]))
    return (
        f'<body><div id="wrapper"><div id="header"><h3>'
        f'<a href="{style.base}/">{escape(style.name)}</a></h3>'
        f'<ul id="topnav">{_nav(style)}</ul></div><div id="main"><div class="post">'
        f'<h1 class="entry-title">{escape(page.headline)}</h1><div class="postmeta">Posted by '
        f"{escape(page.author)} on {_date(page)} in {page.section.title()}</div>"
        f'<div class="post-entry">{body}{style.box()}</div>'
        f'<div class="tags">Tags: {page.section}</div></div>'
        f'</div><div id="sidebar"><div class="widget"><h4>About us</h4><p>{style.about}</p></div>'
        f'<div class="widget"><h4>Most popular</h4><ul>{_related(page)}</ul></div></div>'
        f'<div id="footer">Powered by NewsPress · © {escape(style.name)}</div></div></body>'
    )  # fmt: skip


_TEMPLATES = (_classic, _divsoup, _modern, _legacy)


def article_html(style: Style, page: PageInfo) -> str:
    """The outlet's article page."""
    body = _TEMPLATES[style.template](style, page)
    return f'<!DOCTYPE html><html lang="en">{_head(style, page)}{body}</html>'


def amp_html(style: Style, page: PageInfo, canonical: str) -> str:
    """The AMP version of an article, its canonical link pointing at ``canonical``."""
    return (
        f'<!DOCTYPE html><html amp lang="en">{_head(style, page, amp=True, canonical=canonical)}'
        f'<body><header class="amp-header">{escape(style.name)}</header><article>'
        f'<h1>{escape(page.headline)}</h1><p class="amp-byline">{escape(page.author)}</p>'
        f"{_paras(page.paragraphs)}</article><footer>{escape(style.name)}</footer></body></html>"
    )


def video_html(style: Style, page: PageInfo) -> str:
    """A page with no article: a headline, a video player and a one-line caption."""
    return (
        f'<!DOCTYPE html><html lang="en">{_head(style, page)}<body><header>'
        f'<a href="{style.base}/">{escape(style.name)}</a></header>'
        f'<main><h1>{escape(page.headline)}</h1><video src="{style.base}/media/clip.mp4" controls>'
        f"</video><p>Watch: {escape(page.paragraphs[0])}</p></main>"
        f"<footer>© {escape(style.name)}</footer></body></html>"
    )  # fmt: skip


def index_html(style: Style, links: list[tuple[str, str]]) -> str:
    """The outlet's home page: its headlines as links."""
    items = "".join(f'<li><a href="{u}">{escape(t)}</a></li>' for t, u in links)
    return (
        f"<!DOCTYPE html><html><head><title>{escape(style.name)}</title></head><body>"
        f"<h1>{escape(style.name)}</h1><ul>{items}</ul></body></html>"
    )


def rss_xml(style: Style, items: list[tuple[str, str, datetime, str]]) -> str:
    """An RSS 2.0 feed of ``(title, link, published, summary)`` items."""
    entries = "".join(
        f"<item><title>{escape(t)}</title><link>{escape(u)}</link>"
        f'<guid isPermaLink="true">{escape(u)}</guid><pubDate>{format_datetime(d)}</pubDate>'
        f"<description>{escape(s[:200])}</description></item>"
        for t, u, d, s in items
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel>'
        f"<title>{escape(style.name)}</title><link>{style.base}/</link>"
        f"<description>Latest stories from {escape(style.name)}</description>"
        f"{entries}</channel></rss>"
    )


# -- briefs: short, unrelated items, mostly the outlet's boilerplate ------------------

_PLACES = ("Riverside", "Oakdale", "Fairview", "Lakeside", "Brookfield", "Maple Grove", "Westport")
_THINGS = (
    ("library", "renovation of the main reading room"),
    ("water utility", "replacement of ageing lead service lines"),
    ("school board", "later start times for the high school"),
    ("parks department", "a new dog park near the river trail"),
    ("transit agency", "an extra late-night bus route"),
    ("county fair", "a return of the livestock show after three years"),
    ("fire department", "the purchase of two new ladder trucks"),
    ("city council", "a ban on leaf blowers before 8 a.m."),
)
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")
BRIEF_TOPICS = len(_THINGS)
"""Briefs a site can have: brief n takes topic n, so two briefs are different news."""


def brief_paragraphs(rng: random.Random, n: int) -> tuple[str, str]:
    """The headline and text of short local brief number ``n``, from seeded parts.

    Briefs share the wording of their kind, as real ones do, but brief ``n`` takes topic
    ``n`` (in turn) and one of three phrasings, so two briefs are different news.
    """
    place = rng.choice(_PLACES)
    body, topic = _THINGS[n % len(_THINGS)]
    day, later = rng.sample(_DAYS, 2)
    cost = f"${rng.randint(2, 95) * 10_000:,}"
    when = rng.choice(("spring", "next month", "the new year", "August"))
    headline = f"{place} {body} backs {topic.split(' of ')[0].split(' for ')[0]}"
    text = rng.choice((
        f"The {place} {body} voted {rng.randint(3, 9)} to {rng.randint(0, 2)} on {day} to "
        f"approve {topic}, at an estimated cost of {cost}. Officials said work could begin "
        f"as soon as {when}, and residents can comment at a public hearing on {later}.",
        f"Plans for {topic} in {place} cleared their last hurdle on {day}, when the {body} "
        f"signed off on a {cost} budget. A spokesperson said the first phase should be "
        f"finished by {when}; details will be posted on the {body}'s website.",
        f"{place} residents will see {topic} after a {day} decision by the {body}. The "
        f"project, expected to cost {cost}, drew a crowd of {rng.randint(20, 200)} people, "
        f"most of them in favour, to a packed meeting that ran past {rng.randint(9, 11)} p.m.",
    ))  # fmt: skip
    return headline, text
