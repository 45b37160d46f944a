"""Continuation chunks: article bodies cut into sibling containers of one kind.

Some publishers split one article body into several containers of the same tag and
class (a ``div`` per chunk, with an ad rail or a related-stories box between them);
trafilatura then sometimes keeps the first chunk only. When the container that holds
most of our paragraphs has close relatives of the same kind (a common ancestor at most
``MAX_LEVELS`` above them) holding at least ``MIN_LONG`` long paragraphs that are not in
our text, those paragraphs are the rest of the article and are added, in page order.

Widget containers repeated all over a page (sidebars, teaser cards) are kept out by the
two conditions together: they rarely sit right beside the body, and rarely hold several
long paragraphs.
"""

from __future__ import annotations

from collections import Counter
from itertools import islice

from lxml.html import HtmlElement

from newsq.clean.rules import Norms

MAX_LEVELS = 2
"""How far above a chunk its common ancestor with our container may be."""
LONG_WORDS = 20
"""A paragraph of this many words or more is article-like."""
MIN_LONG = 3
"""A relative chunk needs this many long paragraphs missing from our text to count."""
KEY_MIN_WORDS = 8
"""Lines of our text at least this long locate our container in the page."""
KEY_MIN_CHARS = 2 * KEY_MIN_WORDS - 1
"""Fewer characters than this cannot hold ``KEY_MIN_WORDS`` words."""


def _container(tree: HtmlElement, keys: set[str], norms: Norms) -> HtmlElement | None:
    """The parent of most page paragraphs whose text is one of ``keys``, or ``None``."""
    parents: Counter[HtmlElement] = Counter()
    for para in tree.iter("p"):
        raw = para.text_content()
        if len(raw) < KEY_MIN_CHARS:  # too short to be one of our lines: skip the regex
            continue
        if norms[raw] in keys:  # most of our paragraphs come out as they are: keyed already
            parent = para.getparent()
            if parent is not None:
                parents[parent] += 1
    return parents.most_common(1)[0][0] if parents else None


def _is_close(chunk: HtmlElement, ours: HtmlElement) -> bool:
    """True when neither contains the other and they meet within ``MAX_LEVELS`` levels."""
    ours_up = list(ours.iterancestors())
    if any(up is chunk for up in ours_up):
        return False
    ours_set = {id(up) for up in ours_up[:MAX_LEVELS]}
    for level, up in enumerate(chunk.iterancestors()):
        if up is ours:
            return False
        if level >= MAX_LEVELS:
            return False
        if id(up) in ours_set:
            return True
    return False


def _scope(ours: HtmlElement) -> HtmlElement | None:
    """``ours``' ancestor ``MAX_LEVELS`` up (or the highest there is): every chunk close to
    ``ours`` (``_is_close``) is under it, so its subtree is searched rather than the page,
    which has many more containers of the kind (each one an element object to make)."""
    ups = list(islice(ours.iterancestors(), MAX_LEVELS))
    return ups[-1] if ups else None


def _missing_paragraphs(chunk: HtmlElement, text_key: str, norms: Norms) -> list[str]:
    """The chunk's paragraph texts (whitespace collapsed) that ``text_key`` lacks."""
    found = []
    for para in chunk.iter("p"):
        text = " ".join(para.text_content().split())
        key = norms[text]
        if key and key not in text_key:
            found.append(text)
    return found


def add_continuations(tree: HtmlElement, text: str, norms: Norms | None = None) -> str:
    """``text`` with the paragraphs of the article's continuation chunks added in page
    order; ``text`` itself when the page has none (the usual case). ``norms``: the page's
    ``Norms`` (``clean_body`` keyed most of our lines already).
    """
    norms = Norms() if norms is None else norms
    lines = text.split("\n")
    keys = {norms[line] for line in lines if line.count(" ") + 1 >= KEY_MIN_WORDS}
    ours = _container(tree, keys, norms) if keys else None
    kind = ours.get("class") if ours is not None else None
    scope = _scope(ours) if ours is not None else None
    if ours is None or not kind or scope is None:
        return text
    # norm(text), from the keys of its lines: no word runs across a line break
    text_key = " ".join(key for line in lines if (key := norms[line]))
    before: list[str] = []
    after: list[str] = []
    seen_ours = False
    for chunk in scope.iter(ours.tag):
        if chunk is ours:
            seen_ours = True
            continue
        if chunk.get("class") != kind or not _is_close(chunk, ours):
            continue
        missing = _missing_paragraphs(chunk, text_key, norms)
        if sum(len(p.split()) >= LONG_WORDS for p in missing) >= MIN_LONG:
            (after if seen_ours else before).extend(missing)
    if not before and not after:
        return text
    return "\n".join([*before, text, *after])
