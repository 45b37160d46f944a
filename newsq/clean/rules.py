"""Post-cleaning of trafilatura's main-text tree: general rules for what it lets through.

trafilatura keeps some page furniture that sits inside the article container: the
headline and standfirst above the body, newsletter and donation boxes, "Read more:"
and "Don't miss" link blocks, share/print/copyright lines (a news agency's credit is
kept: it belongs to the wire story), navigation lists, repeated captions, and the
heading of a related-links box left at the end of the text. Each rule
here looks at one top-level block of the extracted tree (``p``, ``head``, ``list``,
``quote``, ``table``...) and says whether it is such furniture. Rules are language-light
and keyed to no site.

``clean_body`` removes the blocks in place and returns how many it removed per rule.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

from lxml.etree import _Element

_WORD = re.compile(r"\w+")

# A whole block that is a promotion, a call to action or page chrome.
PROMO_LINE = re.compile(
    r"""^(?:
      (?:read|see|watch|listen\ to)\ (?:more|also|next|the\ latest)\b.{0,200}$
    | (?:related|more|also)\ ?
      (?:articles?|stories|coverage|content|reading|news|videos?|on\ [\w.]+)?\s*:.{0,200}$
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
    | -?\ ?(?:order\ reprints|print\ (?:this\ )?article|share\ (?:on|via)\ \w+
        |advertisement)\W{0,3}$
    | \d*\ ?comments?\W{0,3}$
    | tags?\s*:?.{0,0}$
    | (?:sorry!?|an\ error\ has\ occurred|there\ was\ an\ error\ processing)\b.{0,120}$
    | keep\ an\ eye\ on\ your\ inbox\b.{0,120}$
    | follow\ .{0,60}\bon\ (?:twitter|facebook|instagram|youtube)\b.{0,80}$
    | (?:write\ to|contact|email)\ .{0,60}\ at\ \S+@\S+\.\w+\W{0,3}$
    | (?:(?:published|updated|posted)\ )?(?:\w+,?\ )?(?:\d{1,2}\ )?
      (?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)\w*\.?\ \d{1,2}(?:st|nd|rd|th)?,?\ \d{4}\b
      [\d\s:/|apm.,-]{0,20}(?:updated\ [\w\s]{0,20}ago)?$
    | this\ (?:article|story)\ has\ been\ sent\ to\b.{0,120}$
    | (?:à\ |a\ )?lire\ aussi\b.{0,200}$
    | (?:lesen\ sie\ (?:auch|mehr)|lies\ auch|mehr\ zum\ thema|auch\ interessant
      |das\ könnte\ sie\ (?:auch\ )?interessieren|vorschau\ auf\ den\ nächsten\ artikel
      |weitere\ (?:aktuelle\ )?(?:themen|artikel|beiträge|nachrichten)
      |(?:lee|ver|vea)\ también|te\ puede\ interesar|puedes\ ver|mire)\b.{0,200}$
    | (?:categor(?:y|ies|ía|ías)|kategorien?|rubrik|temas|themen|schlagw(?:ö|oe)rter)
      \s*(?::.{0,80})?$
    | (?:teilen\ mit|share\ this|gefällt\ mir|like\ this|wird\ geladen|loading)\W{0,5}$
    | .{0,40}\b(?:bloggern?\ gefällt\ das|bloggers?\ like\ this)\W{0,3}$
    | \*?(?:werbung|anzeige|advertisement|sponsored|publicidad)\b.{0,200}$
    | unterstütze(?:n\ sie)?\b.{0,80}$
    )""",
    re.IGNORECASE | re.VERBOSE,
)
# Newsletter, subscription and donation appeals, wherever they are in a short block.
APPEAL = re.compile(
    r"\b(?:sign\ up|subscribe|join|get)\b.{0,80}"
    r"\b(?:newsletter|inbox|channel|podcast|our\ (?:free\ )?\w+\ (?:email|app))\b"
    r"|\bnewsletter\W{0,3}$"
    r"|\b(?:if\ you\ (?:enjoyed|liked|value)\ this\ (?:article|story)"
    r"|support\ (?:our|independent)\ journalism)\b"
    r"|\b(?:get|download)\ the\ .{0,30}\bapp\W{0,3}$"
    r"|\bsubscri\w+\b.{0,80}\b(?:full\ story|log\ ?in|access|edition|welcome\ gift)\b"
    r"|\b(?:full\ story|log\ ?in)\b.{0,80}\bsubscri\w+"
    r"|\b(?:download|get|install)\b.{0,60}\bapps?\b.{0,40}\b(?:ios|android)\b"
    r"|\bsign\ up\b.{0,40}\b(?:best|latest|content|updates|alerts)\b"
    r"|\bsubmit\ (?:your|a)\ (?:letter|story|tip|news)\b"
    r"|^(?:do\ you\ )?want\ to\ (?:be\ informed|stay\ (?:informed|updated))"
    r"|^follow\ .{0,60}\bon\ (?:twitter|facebook|instagram|youtube|telegram|whatsapp)\b"
    r"|\b(?:únete|suscríbete|abonnieren\ sie|abonniere|abonnez-vous|inscrivez-vous)\b"
    r"|\b(?:telegram|whatsapp)[-\ ](?:kanal|channel)\b|\bcanal\ de\ (?:telegram|whatsapp)\b"
    r"|\bthis\ (?:post|article|page)\ (?:contains|may\ contain)\ (?:affiliate|references\ to"
    r"\ products|advertising|sponsored)",
    re.IGNORECASE | re.VERBOSE,
)
# Words one of which each of APPEAL's branches holds, lower-cased: a short block with
# none of them cannot match it, and looking for them costs a tenth of APPEAL's scan.
# "ı", "ſ" and U+0307 (of "İ".lower()) match ASCII letters only under IGNORECASE: with
# one of them in the text, APPEAL decides.
_APPEAL_WORDS = (
    "newsletter", "inbox", "channel", "podcast", " email", "if you enjoyed", "if you liked",
    "if you value", "journalism", "subscri", "sign up", "submit your", "submit a ",
    "únete", "suscríbete", "abonn", "inscrivez", "telegram", "whatsapp", "this post ",
    "this article ", "this page ", "ı", "ſ", "\u0307",
)  # fmt: skip
_APPEAL_STARTS = ("want to", "do you want to", "follow")
_APP = re.compile(r"\bapp")


def _may_appeal(text: str) -> bool:
    """False only when ``APPEAL`` cannot match ``text`` (see ``_APPEAL_WORDS``)."""
    low = text.lower()
    if low.startswith(_APPEAL_STARTS) or any(word in low for word in _APPEAL_WORDS):
        return True
    return "app" in low and _APP.search(low) is not None


# A short heading that introduces a block of links to other stories.
LINK_BLOCK_HEADING = re.compile(
    r"^(?:don'?t\ miss|you\ (?:may|might)\ also\ like|related(?:\ \w+)?"
    r"|more\ (?:from|on|stories)\b.{0,40}"
    r"|recommended(?:\ for\ you)?|see\ also|read\ (?:more|also|next)|trending(?:\ now)?"
    r"|most\ (?:read|popular)|story\ timeline|leggi\ anche|veja\ também|leia\ também)\W{0,3}$",
    re.IGNORECASE | re.VERBOSE,
)
# A news agency's credit or syndication notice ("© Reuters", "© 2019 Associated Press. All
# Rights Reserved. This material may not be published...") belongs to the wire story.
WIRE_CREDIT = re.compile(
    r"^(?:©|copyright|\(c\))\W*(?:\d{4}\W*)?(?:the\ )?"
    r"(?:associated\ press|reuters|agence\ france-presse|afp|bloomberg|dpa|efe|ansa"
    r"|press\ association|united\ press\ international)\b",
    re.IGNORECASE | re.VERBOSE,
)
APPEAL_MAX_CHARS = 300
LINK_MIN_WORDS = 4
NAV_MIN_ITEMS = 8
NAV_MAX_WORDS = 4
NAV_SHARED_WORD_SHARE = 0.6


def _text(el: _Element) -> str:
    """``"".join(el.itertext())``; an element without children (most links) gives its
    ``text`` directly, without the iterator (a third of ``link_texts``' time)."""
    if len(el):
        return "".join(el.itertext())
    return el.text or ""


def block_text(el: _Element) -> str:
    """The block's text with whitespace collapsed (``split`` and ``\\s`` know the same
    whitespace; splitting is twice as fast as a regex substitution)."""
    return " ".join(_text(el).split())


def norm(text: str) -> str:
    """Lower-cased words of ``text`` joined by single spaces: the key rules compare."""
    return " ".join(_WORD.findall(text.lower()))


class Norms(dict[str, str]):
    """``norm`` of each distinct string, computed on first use. One page's rules key the
    same strings several times (a block's text and its lines, our text's lines and the
    page's paragraphs): one instance per page shares the work and is dropped with it."""

    def __missing__(self, text: str) -> str:
        key = self[text] = norm(text)
        return key


def link_texts(tree: _Element) -> frozenset[str]:
    """Normalised texts of the page's links of ``LINK_MIN_WORDS`` words or more."""
    texts = set()
    min_chars = 2 * LINK_MIN_WORDS - 1  # shorter text cannot hold that many words
    for anchor in tree.iter("a"):
        raw = _text(anchor)
        if len(raw) < min_chars:
            continue
        key = norm(raw)
        if key.count(" ") + 1 >= LINK_MIN_WORDS:
            texts.add(key)
    return frozenset(texts)


def _parts(el: _Element, norms: Norms) -> list[str]:
    """The block's lines: list items, or the text between line breaks."""
    if el.tag == "list":
        return [t for t in (norms[block_text(item)] for item in el.iter("item")) if t]
    lines = _text(el).split("\n")
    return [t for t in (norms[line] for line in lines) if t]


def is_link_text(
    el: _Element, links: frozenset[str], norms: Norms, *, allow_head: bool = False
) -> bool:
    """True when every line of the block (at least 80% of a list's items) is a link's text."""
    if (el.tag == "head" and not allow_head) or not links:
        return False
    parts = [p for p in _parts(el, norms) if not p.startswith(("http ", "https ", "www "))]
    if not parts:
        return False
    linked = sum(part in links for part in parts)
    return linked == len(parts) or (el.tag == "list" and linked >= 0.8 * len(parts))


def is_promo(el: _Element, text: str) -> bool:
    """True for a promotion, call to action or chrome line (``PROMO_LINE``, ``APPEAL``)."""
    if PROMO_LINE.match(text):
        return not WIRE_CREDIT.match(text)
    return len(text) <= APPEAL_MAX_CHARS and _may_appeal(text) and bool(APPEAL.search(text))


def is_nav_list(el: _Element, text: str) -> bool:
    """True for a list of many very short, distinct items without sentences: a menu or
    tag cloud. A list whose items share a word (poll results, scores) is data: kept."""
    if el.tag != "list":
        return False
    items = [block_text(item) for item in el.iter("item")]
    items = [item for item in items if item]
    if len(items) < NAV_MIN_ITEMS:
        return False
    words = [_WORD.findall(item.lower()) for item in items]
    pairs = zip(words, items, strict=True)
    short = sum(len(w) <= NAV_MAX_WORDS and "." not in item for w, item in pairs)
    if short < 0.9 * len(items):
        return False
    # menu entries are distinct labels; a word on most items ("165 votes", "12 votes")
    # makes the list data, such as poll results or scores, which belongs to the article
    counts = Counter(word for w in words for word in set(w))
    return not counts or max(counts.values()) <= NAV_SHARED_WORD_SHARE * len(items)


def _same_title(key: str, title_key: str) -> bool:
    """True when a normalised heading and title share nearly all their words."""
    if not key or not title_key:
        return False
    words, title_words = set(key.split()), set(title_key.split())
    return len(words & title_words) >= 0.8 * max(len(words), len(title_words))


Rule = Callable[[_Element, str], bool]
TRAILER_WORDS = 6
"""A heading of at most this many words that closes the text heads something cut away."""
_TRAILER_RULE = re.compile(r"^.{0,80}?\s*[-–—_=*]{5,}$")  # "Related Topics -----", "_____"
_SENTENCE_END = re.compile(r"[.!?…:;\"“”»)\]]$")


def is_trailer(el: _Element, text: str) -> bool:
    """True for the last block of a text when it is a rule of dashes (with a few words
    before it) or a short heading with nothing after it: the title of a related-links or
    offers box whose items were dropped, not a part of the article."""
    if _TRAILER_RULE.match(text):
        return True
    return (
        el.tag == "head" and len(text.split()) <= TRAILER_WORDS and not _SENTENCE_END.search(text)
    )


RULES: dict[str, Rule] = {
    "promo": is_promo,
    "nav_list": is_nav_list,
}


def _remove(el: _Element) -> None:
    """Detach ``el`` but keep its tail text, which belongs to the surrounding block."""
    parent = el.getparent()
    if parent is None:
        return
    if el.tail and el.tail.strip():
        previous = el.getprevious()
        if previous is not None:
            previous.tail = (previous.tail or "") + el.tail
        else:
            parent.text = (parent.text or "") + el.tail
    parent.remove(el)


def _link_blocks(
    blocks: list[tuple[_Element, str]], links: frozenset[str], norms: Norms
) -> set[int]:
    """Indexes of teaser blocks: link texts in a run of two or more, a list of links,
    anything after a "Related"/"Don't miss" heading, or link texts after the last body
    paragraph. A lone link line between paragraphs is kept: it is often the article's.
    """
    flags = [is_link_text(el, links, norms, allow_head=True) for el, _ in blocks]
    last_body = max((i for i, f in enumerate(flags) if not f), default=-1)
    chosen: set[int] = set()
    after_heading = False
    for i, (el, text) in enumerate(blocks):
        if LINK_BLOCK_HEADING.match(text):
            chosen.add(i)
            after_heading = True
            continue
        if not flags[i]:
            after_heading = False
            continue
        in_run = (i > 0 and flags[i - 1]) or (i + 1 < len(flags) and flags[i + 1])
        grouped = in_run or after_heading
        alone_ok = el.tag != "head" and (i > last_body or (el.tag == "list" and len(el) > 1))
        if grouped or alone_ok:
            chosen.add(i)
    return chosen


def clean_body(
    body: _Element,
    title: str | None = None,
    links: frozenset[str] = frozenset(),
    norms: Norms | None = None,
) -> Counter[str]:
    """Remove furniture blocks from ``body`` in place; returns removals per rule name.

    ``links`` are the normalised link texts of the whole page (``link_texts``). Never
    fails: a body with nothing to remove comes back unchanged. ``norms``: the page's
    ``Norms``, if the caller keys its strings too.
    """
    norms = Norms() if norms is None else norms
    removed: Counter[str] = Counter()
    blocks = [(el, text) for el in body if (text := block_text(el))]
    teasers = _link_blocks(blocks, links, norms)
    title_key = norm(title) if title else ""
    body_started = False
    after_title = False
    for i, (el, text) in enumerate(blocks):
        key = norms[text]
        reason = None
        if not body_started and el.tag == "head" and (after_title or _same_title(key, title_key)):
            # the headline, and the standfirst right under it, are not body text
            reason = "headline"
            after_title = not after_title
        elif title_key and key == title_key:
            reason = "headline"
        elif i in teasers:
            reason = "link_block"
        else:
            reason = next((name for name, rule in RULES.items() if rule(el, text)), None)
        if reason:
            removed[reason] += 1
            _remove(el)
        elif el.tag != "head":
            body_started = True
    kept = [(el, text) for el, text in blocks if el.getparent() is not None]
    if len(kept) >= 3 and is_trailer(*kept[-1]):
        removed["trailer"] += 1
        _remove(kept[-1][0])
    return removed
