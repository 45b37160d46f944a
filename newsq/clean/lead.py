"""The lead: the article's first paragraph, set apart between the headline and the body.

Many sites print their lead (a "Vorspann", "chapô", "entradilla") in a block of its own
under the headline, classed ``lead``, ``teaser``, ``intro``, ``excerpt`` ...;
trafilatura's extraction starts at the body and leaves it out. ``find_lead`` finds such
a block after the page's first ``<h1>`` and before the body's first paragraph; the
clean stage puts it back at the head of the text when it reads as prose (two sentences
or more, a few lines long). A one-line dek, a subtitle under the headline, is not body
text and stays out, as do captions, navigation and link blocks.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from itertools import islice

from lxml.etree import _Element

from newsq.clean.rules import block_text

LEAD_CLASS = re.compile(
    r"lead|teaser|intro|excerpt|standfirst|deck|summary|subline|sub-?head|descript|"
    r"abstract|kicker|short-info|hero-text",
    re.IGNORECASE,
)
"""Class or id words of a block that holds a lead."""
FOLLOWING = 60
"""Elements after the headline looked at: a lead sits right under it."""
MIN_CHARS = 140
MAX_CHARS = 1200
MIN_SENTENCES = 2
MAX_LINK_SHARE = 0.3
"""A block whose text is more than this share link text is a teaser of other pages."""
SUBTITLE_POSITION = 3
"""An unclassed ``<h2>`` within this many elements of the headline may be a lead."""

_OUTSIDE = frozenset({
    "nav", "aside", "footer", "figure", "figcaption", "form", "script", "style",
    "noscript", "button", "a", "ul", "ol", "li", "time",
})  # fmt: skip
_SENTENCE_END = re.compile(r"[.!?…](?:\s|$)")
_BODY_START = 40  # characters: a paragraph this long that is in the text starts the body


def _following(el: _Element) -> Iterator[_Element]:
    """The elements after ``el`` in document order, its own descendants not among them
    (XPath's ``following::*``, lazily: a lead is looked for in the first few)."""
    node: _Element | None = el
    while node is not None:
        for sibling in node.itersiblings():
            if isinstance(sibling.tag, str):
                yield sibling
            yield from (d for d in sibling.iterdescendants() if isinstance(d.tag, str))
        node = node.getparent()


def prose(text: str) -> bool:
    """True for a paragraph of prose: two sentences or more, a few lines long."""
    return MIN_CHARS <= len(text) <= MAX_CHARS and len(_SENTENCE_END.findall(text)) >= MIN_SENTENCES


def find_lead(tree: _Element, text: str) -> str | None:
    """The lead paragraph of ``tree`` that ``text`` (the extracted body) lacks, or None."""
    h1 = next(tree.iter("h1"), None)
    if h1 is None:
        return None
    flat = " ".join(text.split())
    for position, el in enumerate(islice(_following(h1), FOLLOWING), 1):
        if el.tag in _OUTSIDE:
            continue
        if el.tag == "p":
            paragraph = block_text(el)
            if len(paragraph) >= _BODY_START and paragraph[:60] in flat:
                return None  # the body has begun: a lead comes before it
        marks = f"{el.get('class') or ''} {el.get('id') or ''}"
        subtitle = el.tag == "h2" and position <= SUBTITLE_POSITION
        if not (subtitle or LEAD_CLASS.search(marks)):
            continue
        if next(el.iter("script", "style"), None) is not None:
            continue
        if any(a.tag in _OUTSIDE or a.tag == "header" for a in el.iterancestors()):
            continue  # in the page's or the article's header: a dek, with the headline
        candidate = block_text(el)
        if not prose(candidate):
            continue
        if candidate in flat:
            return None  # already in the text
        links = sum(len(block_text(a)) for a in el.iter("a"))
        if links <= MAX_LINK_SHARE * len(candidate):
            return candidate
    return None
