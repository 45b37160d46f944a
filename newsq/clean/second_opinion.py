"""A second opinion on suspicious pages: readability as a tighter candidate.

trafilatura sometimes keeps, inside the container it chose, blocks that are not the
article: a run of teaser items, or the whole page laid out in one table. When such
blocks (``list``, ``table``) hold enough of its body's text that trimming them could
shorten it to ``MAX_LENGTH_RATIO``, the page is *suspicious*, and we ask
readability (trafilatura's fork of readability-lxml) for its candidate on a copy of
the same tree. readability scores
containers by paragraph text and drops link-heavy ones, so when it returns a text that
is all inside ours but clearly shorter, the difference is furniture and its text wins.

Only suspicious pages pay for the second extractor (1 bench page in 10), which
keeps the clean stage near trafilatura's own speed.
"""

from __future__ import annotations

import copy
import logging
import re
from collections import Counter

from lxml.etree import ParserError, _Element
from lxml.html import HtmlElement, fragment_fromstring
from lxml_html_clean import Cleaner
from trafilatura.readability_lxml import Document

LOGGER = logging.getLogger(__name__)

SUSPICIOUS_TAGS = frozenset({"list", "table"})
"""Blocks of trafilatura's body that make a page worth a second opinion."""
MAX_LENGTH_RATIO = 0.85
"""The alternative must be at most this share of our text's length to be taken ...,"""
MIN_LENGTH_RATIO = 0.5
"""... at least this share (a fragment much shorter is another block, a caption or a
teaser inside ours, not ours trimmed) ..."""
MIN_CONTAINMENT = 0.98
"""... and at least this share of its shingles must be in our text (it only trims)."""
SHORT_TEXT = 500
"""Characters: a fast result this short ..."""
LONG_PAGE = 3000
"""... on a page with this many characters of text is doubtful."""
MAX_PAGE_CHARS = 500_000
"""Characters of text above which a page gets no second full pass (jusText's work grows
with it; real articles' pages hold far less)."""
MENU_LINES = 0.6
"""A fast result whose lines are this share or more short ones (under ``MENU_WORDS``
words), holding ``MENU_CHARS`` of its text or more, reads like a menu or a calendar ..."""
MENU_CHARS = 0.4
MENU_WORDS = 4
MENU_LINE_CHARS = 80
"""A line this long is never a menu item."""
MENU_MIN_LINES = 8
"""... when it has at least this many lines."""
SHINGLE = 4

_TOKEN = re.compile(r"\w+")
_BLOCK_TAGS = frozenset(
    {"p", "div", "li", "tr", "br", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre"}
)


def _text_chars(el: _Element) -> int:
    return sum(len(piece.strip()) for piece in el.itertext())


def is_suspicious(body: _Element) -> bool:
    """True when lists or tables at the top level of trafilatura's body hold enough of
    its text that trimming them could make it ``MAX_LENGTH_RATIO`` as long: below that
    share readability's text would not be taken as a trimming of furniture anyway (on
    the bench pages it never was), and it is not asked."""
    blocks = [el for el in body if el.tag in SUSPICIOUS_TAGS]
    if not blocks:
        return False
    total = _text_chars(body)
    return total > 0 and sum(map(_text_chars, blocks)) >= (1 - MAX_LENGTH_RATIO) * total


def shingles(text: str, n: int = SHINGLE) -> Counter[tuple[str, ...]]:
    """The multiset of ``n``-word shingles of ``text`` (one short shingle if fewer words)."""
    tokens = _TOKEN.findall(text)
    if len(tokens) < n:
        return Counter([tuple(tokens)]) if tokens else Counter()
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def containment(part: str, whole: str) -> float:
    """Share of ``part``'s shingles that are also in ``whole`` (0.0 when ``part`` is empty)."""
    ours = shingles(part)
    total = sum(ours.values())
    return sum((ours & shingles(whole)).values()) / total if total else 0.0


# readability-lxml's own cleaner settings, without its rewriting of every link to a
# blank ``javascript:`` one: work its scoring and our text never see
_CLEANER = Cleaner(
    scripts=True, javascript=False, comments=True, style=True, links=True, meta=False,
    add_nofollow=False, page_structure=False, processing_instructions=True,
    embedded=False, frames=False, forms=False, annoying_tags=False,
    remove_unknown_tags=False, safe_attrs_only=False,
)  # fmt: skip
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.I)


def readability_text(tree: HtmlElement, url: str | None) -> str:
    """readability's main text of a copy of ``tree`` (trafilatura's fork of
    readability-lxml), one block a line; ``""`` on failure."""
    doc = copy.deepcopy(tree)
    for elem in doc.xpath("//*[@hidden]"):
        elem.drop_tree()
    for elem in doc.xpath("//*[@style]"):
        if _HIDDEN_STYLE.search(elem.get("style") or ""):
            elem.drop_tree()
    _CLEANER(doc)
    try:
        summary = Document(doc).summary()
        root = fragment_fromstring(summary) if summary.strip() else None
    except (ParserError, ValueError, TypeError) as exc:
        LOGGER.debug("url=%s readability failed: %s", url, exc)
        return ""
    if root is None:
        return ""
    for el in root.iter(*_BLOCK_TAGS):
        el.tail = "\n" + (el.tail or "")
    lines = (" ".join(line.split()) for line in root.text_content().split("\n"))
    return "\n".join(line for line in lines if line)


def choose(text: str, alternative: str) -> str:
    """``alternative`` when it is our text minus furniture (inside it, much shorter, but
    not a small part of it), else ``text``. Never lengthens the text: readability is a
    trimmer here, not a finder.
    """
    if not alternative or len(alternative) > MAX_LENGTH_RATIO * len(text):
        return text
    if len(alternative) < MIN_LENGTH_RATIO * len(text):
        return text
    return alternative if containment(alternative, text) >= MIN_CONTAINMENT else text


# --- doubt: when the fast result is likely the wrong block --------------------------

_WORD = re.compile(r"[^\W\d_]{2,}")  # a word of letters: not a number, not a bar of a table


def menu_like(text: str) -> bool:
    """True when most of ``text``'s lines are a few words or none (a navigation menu, a
    calendar, a list of links) and they hold a good share of it: not an article."""
    lines = [line for line in text.split("\n") if line.strip()]
    if len(lines) < MENU_MIN_LINES:
        return False
    # a long line is prose whatever its words (Chinese or Japanese have no spaces)
    short = [
        ln for ln in lines if len(ln) < MENU_LINE_CHARS and len(_WORD.findall(ln)) < MENU_WORDS
    ]
    return len(short) >= MENU_LINES * len(lines) and sum(map(len, short)) >= MENU_CHARS * len(text)


def doubt(text: str, tree: _Element) -> str | None:
    """Why the fast result ``text`` of ``tree`` looks like the wrong block or too little
    of the page ("short", "menu"), or None when it looks like an article, or when the
    page is too big for a second full pass to be worth its time. Cheap: one pass over
    the text, and over the page's text only when the text is in doubt."""
    why = "menu" if menu_like(text) else "short" if len(text) < SHORT_TEXT else None
    if why is None:
        return None
    page = _text_chars(tree)
    if page > MAX_PAGE_CHARS or (why == "short" and page < LONG_PAGE):
        return None
    return why


def better(text: str, alternative: str, why: str) -> bool:
    """Whether the full extraction's ``alternative`` replaces the doubted ``text``: a
    short one only by more text, a menu by text that is not a menu itself."""
    if why == "short":
        return len(alternative) > len(text)
    return bool(alternative) and not menu_like(alternative)
