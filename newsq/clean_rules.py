"""Post-cleaning of trafilatura's main-text tree: general rules for what it lets through.

trafilatura keeps some page furniture that sits inside the article container: the
headline and standfirst above the body, newsletter and donation boxes, "Read more:"
and "Don't miss" link blocks, share/print/copyright lines, navigation lists and
repeated captions. Each rule here looks at one top-level block of the extracted tree
(``p``, ``head``, ``list``, ``quote``, ``table``...) and says whether it is such
furniture. Rules are language-light and keyed to no site.

``clean_body`` removes the blocks in place and returns how many it removed per rule.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

from lxml import etree

_Element = etree._Element

_WORD = re.compile(r"\w+")
_SPACES = re.compile(r"\s+")

# A whole block that is a promotion, a call to action or page chrome.
PROMO_LINE = re.compile(
    r"""^(?:
      (?:read|see|watch|listen\ to)\ (?:more|also|next|the\ latest)\b.{0,200}$
    | (?:related|more|also)\ ?(?:articles?|stories|coverage|content|reading|news|videos?|on\ [\w.]+)?\s*:.{0,200}$
    | also\ on\ [\w.]+\b.{0,200}$
    | (?:leggi|veja|leia|lea|lire|lisez)\ (?:anche|também|tambem|también|aussi)\b.{0,200}$
    | \(?(?:leggi|veja|leia)\ (?:anche|também)\b.{0,200}$
    | (?:don'?t\ miss|you\ (?:may|might)\ also\ like|recommended(?:\ for\ you)?|more\ from\ .{0,40}
      |trending(?:\ now)?|most\ (?:read|popular|viewed)|editors'?\ picks|further\ reading
      |story\ timeline|related\ (?:articles|stories|links|posts))\W{0,3}$
    | (?:thanks|thank\ you)\ for\ (?:signing\ up|subscribing|reading)\b.{0,120}$
    | like\ this\ (?:story|article)\?.{0,120}$
    | share\ (?:this|it)\ (?:story|article|with)\b.{0,80}$
    | (?:copyright|©|\(c\)\ ?\d{4}).{0,200}$
    | .{0,120}\ball\ rights\ reserved\b.{0,40}$
    | -?\ ?(?:order\ reprints|print\ (?:this\ )?article|share\ (?:on|via)\ \w+|advertisement)\W{0,3}$
    | \d*\ ?comments?\W{0,3}$
    | tags?\s*:?.{0,0}$
    | (?:sorry!?|an\ error\ has\ occurred|there\ was\ an\ error\ processing)\b.{0,120}$
    | keep\ an\ eye\ on\ your\ inbox\b.{0,120}$
    | this\ (?:article|story)\ has\ been\ sent\ to\b.{0,120}$
    )""",
    re.IGNORECASE | re.VERBOSE,
)
# Newsletter, subscription and donation appeals, wherever they are in a short block.
APPEAL = re.compile(
    r"\b(?:sign\ up|subscribe|join|get)\b.{0,80}\b(?:newsletter|inbox|our\ (?:free\ )?\w+\ (?:email|channel|app))\b"
    r"|\bnewsletter\W{0,3}$"
    r"|\b(?:if\ you\ (?:enjoyed|liked|value)\ this\ (?:article|story)|support\ (?:our|independent)\ journalism)\b"
    r"|\b(?:get|download)\ the\ .{0,30}\bapp\W{0,3}$",
    re.IGNORECASE | re.VERBOSE,
)
# A short heading that introduces a block of links to other stories.
LINK_BLOCK_HEADING = re.compile(
    r"^(?:don'?t\ miss|you\ (?:may|might)\ also\ like|related(?:\ \w+)?|more\ (?:from|on|stories)\b.{0,40}"
    r"|recommended(?:\ for\ you)?|see\ also|read\ (?:more|also|next)|trending(?:\ now)?"
    r"|most\ (?:read|popular)|story\ timeline|leggi\ anche|veja\ também|leia\ também)\W{0,3}$",
    re.IGNORECASE | re.VERBOSE,
)
APPEAL_MAX_CHARS = 300
NAV_MIN_ITEMS = 8
NAV_MAX_WORDS = 4


def block_text(el: _Element) -> str:
    """The block's text with whitespace collapsed."""
    return _SPACES.sub(" ", "".join(el.itertext())).strip()


def link_share(el: _Element) -> float:
    """Share of the block's characters that sit inside links (``ref``), 0.0 if empty."""
    total = len(block_text(el))
    if not total:
        return 0.0
    linked = sum(len(block_text(ref)) for ref in el.iter("ref"))
    return min(1.0, linked / total)


def _norm(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def is_promo(el: _Element, text: str) -> bool:
    """True for a promotion, call to action or chrome line (``PROMO_LINE``, ``APPEAL``)."""
    if PROMO_LINE.match(text):
        return True
    return len(text) <= APPEAL_MAX_CHARS and bool(APPEAL.search(text))


def is_nav_list(el: _Element, text: str) -> bool:
    """True for a list of many very short items without sentences: a menu or tag cloud."""
    if el.tag != "list":
        return False
    items = [block_text(item) for item in el.iter("item")]
    items = [item for item in items if item]
    if len(items) < NAV_MIN_ITEMS:
        return False
    short = sum(len(_WORD.findall(item)) <= NAV_MAX_WORDS and "." not in item for item in items)
    return short >= 0.9 * len(items)


def is_link_only(el: _Element, text: str) -> bool:
    """True when (nearly) all of a block's text is links: a teaser or a link list."""
    return bool(text) and link_share(el) >= 0.9


Rule = Callable[[_Element, str], bool]
RULES: dict[str, Rule] = {
    "promo": is_promo,
    "nav_list": is_nav_list,
}


def clean_body(body: _Element, title: str | None = None) -> Counter[str]:
    """Remove furniture blocks from ``body`` in place; returns removals per rule name.

    Never fails: a body with nothing to remove comes back unchanged.
    """
    removed: Counter[str] = Counter()
    blocks = list(body)
    title_key = _norm(title) if title else ""
    in_link_block = False
    body_started = False
    for el in blocks:
        text = block_text(el)
        reason = None
        key = _norm(text)
        if not key:
            in_link_block = in_link_block and True
            continue
        if not body_started and el.tag == "head":
            # the headline and standfirst above the first paragraph are not body text
            reason = "leading_heading"
        elif title_key and key == title_key:
            reason = "title"
        elif in_link_block and is_link_only(el, text):
            reason = "link_block"
        else:
            in_link_block = False
            for name, rule in RULES.items():
                if rule(el, text):
                    reason = name
                    break
            if LINK_BLOCK_HEADING.match(text):
                in_link_block = True
                reason = reason or "link_block"
        if reason:
            removed[reason] += 1
            body.remove(el)
            continue
        if el.tag != "head":
            body_started = True
    return removed
