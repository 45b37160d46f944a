"""The clean stage: one HTML page in, its main text and metadata out (offline, pure).

``extract`` parses the page once and runs, on that one tree:

1. metadata: JSON-LD, meta tags, then markup heuristics (``newsq.clean.metadata``)
2. main text: trafilatura's extractor, in its fast mode with recall favoured
3. post-cleaning: general rules drop headline repeats, promotions, link blocks,
   menus and duplicate paragraphs that trafilatura lets through (``newsq.clean.rules``)
4. a second opinion, only when lists or tables hold 15 % or more of the body's text:
   readability's text (trafilatura's fork) replaces ours when it is ours minus furniture
   (``newsq.clean.second_opinion``); and when the result is doubtful (a few hundred
   characters of a long page, or lines like a menu's), trafilatura's full extraction
   (its comparison with readability and jusText) is run and taken when it does better
5. continuation chunks: when the body is cut into sibling containers and trafilatura
   kept one, the long paragraphs of the others are added (``newsq.clean.chunks``), and
   a lead paragraph set apart above the body is put back (``newsq.clean.lead``)
6. a length check: too little text left means the page has no article

Before 1 and between the passes, the page's bounds (``newsq.clean.limits``) are
checked: a page over one ends as ``Drop(too_complex)``.
"""

from __future__ import annotations

import logging
import unicodedata

import trafilatura
from lxml import etree
from lxml.html import (
    HtmlComment,
    HtmlElement,
    HtmlEntity,
    HTMLParser,
    HtmlProcessingInstruction,
    fromstring,
)
from trafilatura.utils import (
    DOCTYPE_TAG,
    FAULTY_HTML,
    INVALID_XML_CHARS,
    is_dubious_html,
)
from trafilatura.xml import xmltotxt

from newsq import errors
from newsq.clean import second_opinion
from newsq.clean.chunks import add_continuations
from newsq.clean.fast import fast_body
from newsq.clean.lead import find_lead
from newsq.clean.limits import Budget, CleanLimits, TooComplex
from newsq.clean.metadata import extract_metadata
from newsq.clean.rules import Norms, clean_body, link_texts
from newsq.clean.sites import apply as apply_site_rule
from newsq.records import Article, Drop
from newsq.sites import Site

LOGGER = logging.getLogger(__name__)

MIN_TEXT_CHARS = 120
"""Below this many characters of main text a page is taken to carry no article."""

# trafilatura's parser settings (``trafilatura.utils.HTML_PARSER``, 2.3) with lxml's
# C-level element class lookup: lxml.html's own lookup is a Python method called each
# time lxml makes a Python object for an element (~2,000 times a page, through
# trafilatura's and our tree walks). Every element is still an
# ``HtmlElement``; only the form-element subclasses (``FormElement``, ``InputElement``
# ...) are not used, and nothing here calls their methods.
HTML_PARSER = HTMLParser(
    collect_ids=False,
    default_doctype=False,
    encoding="utf-8",
    remove_comments=True,
    remove_pis=True,
)
HTML_PARSER.set_element_class_lookup(
    etree.ElementDefaultClassLookup(
        element=HtmlElement, comment=HtmlComment, pi=HtmlProcessingInstruction, entity=HtmlEntity
    )
)


_CONTROL_BYTES = bytes(c for c in range(0x20) if c not in (0x09, 0x0A, 0x0D))


def _has_invalid_chars(html: str) -> bool:
    """True when ``html`` holds a character of trafilatura's ``INVALID_XML_CHARS`` (C0
    controls but tab, newline and return; U+FFFE, U+FFFF). A C-speed check: the
    regex's own scan is slow on a whole page and nearly always finds nothing."""
    if "\ufffe" in html or "\uffff" in html:
        return True
    raw = html.encode("utf-8", "surrogatepass")
    return len(raw.translate(None, _CONTROL_BYTES)) != len(raw)


def _repair(html: str, beginning: str) -> str:
    """trafilatura's ``repair_faulty_html`` (2.3), its control-character pass skipped
    when there is nothing for it to remove."""
    if _has_invalid_chars(html):
        html = INVALID_XML_CHARS.sub("", html)
    if "doctype" in beginning:  # libxml2 issue: https://bugs.launchpad.net/lxml/+bug/1955915
        firstline, _, rest = html.partition("\n")
        html = DOCTYPE_TAG.sub("", firstline, count=1) + "\n" + rest
    for line in html[:4096].splitlines()[:4]:  # a self-closing <html/> in the first lines
        if "<html" in line and line.endswith("/>"):
            return FAULTY_HTML.sub(r"\1>", html, count=1)
    return html


def fromstring_bytes(html: str) -> HtmlElement | None:
    """``html`` parsed as UTF-8 bytes (trafilatura's ``fromstring_bytes``), or None."""
    try:
        tree = fromstring(html.encode("utf8", "surrogatepass"), parser=HTML_PARSER)
    except Exception as exc:  # as trafilatura: any lxml failure means no tree
        LOGGER.error("lxml parser bytestring %s", exc)
        return None
    return tree if isinstance(tree, HtmlElement) else None


def parse(html: str) -> HtmlElement | None:
    """The lxml tree of ``html``, or ``None`` when it is empty or not HTML.

    The same tree as trafilatura's ``load_html`` (2.3) on a string, with its repair
    step made cheap (``_repair``).
    """
    if not html or not html.strip():
        return None
    beginning = html[:50].lower()
    html = _repair(html, beginning)
    tree: HtmlElement | None = None
    as_bytes = False
    try:
        tree = fromstring(html, parser=HTML_PARSER)
    except ValueError:  # a str with an encoding declaration: parse its bytes
        tree, as_bytes = fromstring_bytes(html), True
    except Exception as exc:  # as trafilatura: try the bytes below
        LOGGER.debug("lxml could not parse the page as text: %s", exc)
    if (tree is None or len(tree) < 1) and not as_bytes:
        tree = fromstring_bytes(html)
    if tree is not None and is_dubious_html(beginning) and len(tree) < 2:
        return None  # no html tag and a single block: not a page
    return tree if isinstance(tree, HtmlElement) else None


def main_text(tree: HtmlElement, url: str | None, title: str | None, budget: Budget) -> str:
    """The cleaned main text of ``tree`` (neither extractor changes it), ``""`` if none.

    When lists or tables still hold a good share of the cleaned body, readability's
    text of the same tree is asked for and taken if it is ours minus furniture (``second_opinion``).
    Paragraphs of the article's continuation chunks are then added (``clean_chunks``).
    Raises :class:`TooComplex` when ``budget`` is spent before a pass.
    """
    norms = Norms()  # strings of this page normalised once, shared by the rules below
    links = link_texts(tree)  # from the whole page, before trafilatura strips the links
    budget.check("trafilatura")
    body = _trafilatura_body(tree, url, fast=True)
    if body is None:
        return ""
    text = _cleaned_text(body, url, title, links, norms)
    budget.check("the second opinion")
    if text and second_opinion.is_suspicious(body):
        chosen = second_opinion.choose(text, second_opinion.readability_text(tree, url))
        if chosen is not text:
            LOGGER.debug("url=%s readability's tighter text taken", url)
        text = chosen
    budget.check("continuations")
    text = add_continuations(tree, text, norms) if text else text
    why = second_opinion.doubt(text, tree)
    if why is not None:
        budget.check("the full extraction")
        full = _trafilatura_body(tree, url, fast=False)
        alternative = "" if full is None else _cleaned_text(full, url, title, links, norms)
        alternative = add_continuations(tree, alternative, norms) if alternative else ""
        if second_opinion.better(text, alternative, why):
            LOGGER.debug("url=%s fast result doubtful (%s): full extraction taken", url, why)
            text = alternative
    lead = find_lead(tree, text) if text else None
    if lead is not None:
        text = f"{lead}\n{text}"
    # one normal form, as trafilatura gives: the same text hashes the same for dedup
    return text if unicodedata.is_normalized("NFC", text) else unicodedata.normalize("NFC", text)


def _trafilatura_body(tree: HtmlElement, url: str | None, *, fast: bool) -> etree._Element | None:
    """trafilatura's body of ``tree`` (which it leaves as it is): fast, favouring recall,
    or its full extraction with its own defaults (readability and jusText compared)."""
    if fast:
        return fast_body(tree, url)
    document = trafilatura.bare_extraction(
        tree,
        url=url,
        fast=fast,
        favor_recall=fast,
        include_comments=False,
        include_tables=True,
        with_metadata=False,
    )
    return getattr(document, "body", None)


def _cleaned_text(body: etree._Element, url: str | None, title: str | None,
                  links: frozenset[str], norms: Norms) -> str:  # fmt: skip
    """``body`` after the post-cleaning rules, as text."""
    removed = clean_body(body, title, links, norms)
    if removed:
        LOGGER.debug("url=%s post-clean removed %s", url, dict(removed))
    return xmltotxt(body, include_formatting=False).strip()


def extract(html: str, url: str | None = None, limits: CleanLimits | None = None,
            site: Site | None = None) -> Article | Drop:  # fmt: skip
    """The article of one page, or ``Drop(no_content)`` when it has none.

    Pure and offline: no network, no Redis. Never raises on bad markup; an empty,
    non-HTML or article-less page gives a ``Drop`` with a detail saying which, a page
    over ``limits`` (the defaults when None) ``Drop(too_complex)``. ``site``: the
    page's site rule (``newsq.sites``), applied before the main text is sought.
    """
    limits = limits or CleanLimits()
    try:
        return _extract(html, url, limits, site)
    except TooComplex as exc:
        LOGGER.info("url=%s too complex: %s", url, exc)
        return Drop(errors.TOO_COMPLEX, str(exc))


def _extract(html: str, url: str | None, limits: CleanLimits,
             site: Site | None) -> Article | Drop:  # fmt: skip
    budget = limits.budget()
    # 1. one parse, of markup and a tree within the bounds
    limits.check_markup(html)
    tree = parse(html)
    if tree is None:
        return Drop(errors.NO_CONTENT, "empty or not HTML")
    limits.check_tree(tree)
    # 2. metadata, read before trafilatura prunes its copy of the tree
    meta = extract_metadata(tree, url)
    # 3. main text, post-cleaned, with a second opinion on suspicious pages
    if site is not None:
        tree = apply_site_rule(tree, site)
    text = main_text(tree, url, meta.title, budget)
    # 4. length check
    if len(text) < MIN_TEXT_CHARS:
        LOGGER.info("url=%s no article: %d characters of main text", url, len(text))
        return Drop(errors.NO_CONTENT, f"main text too short ({len(text)} characters)")
    return Article(
        title=meta.title,
        author=meta.author,
        published=meta.published,
        language=meta.language,
        paywalled=meta.paywalled,
        site=meta.site,
        canonical_url=meta.canonical_url,
        text=text,
    )


WARM_PAGE = (  # its language declared: py3langid's model is read in a thread of its own
    '<html lang="en"><head><title>Warm-up</title></head><body><article><h1>Warm-up</h1>'
    + "".join(
        f"<p>Paragraph {n} of the warm-up page: the worker runs it through the clean "
        f"stage once, at start-up, so that its first real page costs what page {n} does.</p>"
        for n in range(1, 9)
    )
    + "</article></body></html>"
)
"""A small article page for ``warm_up`` and :meth:`newsq.resources.Runtime.warm_up`."""


def warm_up() -> None:
    """Run the clean stage once on a small page: trafilatura, lxml and the language
    model make their state on first use, a large part of a worker's start."""
    extract(WARM_PAGE, "https://warm-up.invalid/")
