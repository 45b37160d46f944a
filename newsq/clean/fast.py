"""trafilatura's main-text body in its fast mode, favouring recall, comments left out:
what ``trafilatura.bare_extraction`` (2.3.1) runs in that mode, and nothing else.

The same body as ``bare_extraction(tree, fast=True, favor_recall=True,
include_comments=False, include_tables=True)``, for less CPU (``tests/test_clean_fast.py``
holds the two side by side on saved pages):

- the options object is made once and copied per page, not built from the config;
- the page's tree is copied (to be pruned) only when a raw-tree prune finds something;
- no backup copy of the cleaned tree (only the full extraction reads it), and no text of
  the body (newsq post-cleans the body and makes its own);
- the two raw-tree prunes run as tag-filtered walks with Python's ``re`` instead of
  XPath with EXSLT's ``re:test``, which calls back into Python for every candidate
  element: the same elements, in document order, at a quarter of the cost.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from copy import copy

from lxml import etree
from lxml.html import HtmlElement
from trafilatura.baseline import baseline
from trafilatura.core import _forum_thread_page
from trafilatura.htmlprocessing import convert_tags, tree_cleaning
from trafilatura.main_extractor import extract_content
from trafilatura.settings import Extractor
from trafilatura.xml import delete_element

Selector = Callable[[HtmlElement], list[HtmlElement]]

_APPENDED = re.compile("mvp-post-add-(?:box|wrap)|infinite-?scroll")
_APPENDED_ALWAYS = re.compile("mvp-post-add-(?:box|wrap)")
_COMMENTS_ID = re.compile("^(?:[Cc]omment(?!ary)|comol|disqus_thread|dsq-comments)")
_COMMENTS_LIST_ID = re.compile("^(?:[Cc]omment(?!ary)|comol)")
_COMMENTS_CLASS = re.compile("^[Cc]omment(?!ary)|(?:article|post)-comments")


def _appended_articles(tree: HtmlElement) -> list[HtmlElement]:
    """``RAW_TREE_PRUNE_XPATH[0]``: infinite-scroll containers of follow-up articles."""
    found = []
    for el in tree.iterdescendants("div", "section", "aside"):
        id_, class_ = el.get("id", ""), el.get("class", "")
        if (_APPENDED.search(id_) or _APPENDED.search(class_)) and (
            el.find(".//h1") is None
            or _APPENDED_ALWAYS.search(id_)
            or _APPENDED_ALWAYS.search(class_)
        ):
            found.append(el)
    return found


def _share_buttons(tree: HtmlElement) -> list[HtmlElement]:
    """``RAW_TREE_PRUNE_XPATH[1]``: Elementor's share buttons."""
    return [
        el
        for el in tree.iterdescendants("div", "section", "aside")
        if "elementor-share-buttons" in el.get("class", "")
    ]


def _comments_and_lists(tree: HtmlElement) -> list[HtmlElement]:
    """``REMOVE_COMMENTS_AND_LISTS_XPATH[0]``: comment sections (an ``ol``/``ul`` only by
    a comment id or class of its own)."""
    found = []
    for el in tree.iterdescendants("div", "list", "section", "details", "ol", "ul"):
        id_, class_ = el.get("id", ""), el.get("class", "")
        by_id = _COMMENTS_ID.search(id_) and (
            el.tag not in ("ol", "ul") or _COMMENTS_LIST_ID.search(id_)
        )
        if by_id or _COMMENTS_CLASS.search(class_):
            found.append(el)
    return found


RAW_TREE_PRUNE: tuple[Selector, ...] = (_appended_articles, _share_buttons)
"""trafilatura's ``RAW_TREE_PRUNE_XPATH``, element for element."""
COMMENTS_AND_LISTS: tuple[Selector, ...] = (_comments_and_lists,)
"""trafilatura's ``REMOVE_COMMENTS_AND_LISTS_XPATH``, element for element."""

_OPTIONS = Extractor(output_format="python", fast=True, recall=True, comments=False, tables=True)


def _prune(tree: HtmlElement, selectors: tuple[Selector, ...]) -> None:
    """trafilatura's ``prune_unwanted_nodes`` without its backup: each selector's
    elements found first, then deleted (their tail text kept)."""
    for select in selectors:
        for element in select(tree):
            delete_element(element)


def _pruned(tree: HtmlElement) -> HtmlElement:
    """``tree`` after trafilatura's raw-tree prunes: a pruned copy, or ``tree`` itself
    when they find nothing to remove (most pages), which the steps after them only read
    or copy."""
    is_forum = _forum_thread_page(tree)
    selectors = RAW_TREE_PRUNE + (() if is_forum else COMMENTS_AND_LISTS)
    if not any(select(tree) for select in selectors):
        return tree
    tree = copy(tree)
    _prune(tree, RAW_TREE_PRUNE)
    if not is_forum:
        _prune(tree, COMMENTS_AND_LISTS)
    return tree


def fast_body(tree: HtmlElement, url: str | None) -> etree._Element | None:
    """The body ``bare_extraction`` gives for ``tree`` in fast recall mode without
    comments, or None where it gives none; ``tree`` is left as it is."""
    options = copy(_OPTIONS)
    options.url = url
    options.source = url and url.encode("utf-8", "replace").decode("utf-8")
    try:
        tree = _pruned(tree)
        cleaned = convert_tags(tree_cleaning(copy(tree), options), options, url)
        body, text = extract_content(cleaned, options)
        if len(text) < options.min_extracted_size:  # trafilatura's rescue: its baseline
            b_body, b_text, b_len = baseline(tree)
            if b_len > len(text):
                body, text = b_body, b_text
    except (TypeError, ValueError):  # as bare_extraction: no body
        return None
    # bare_extraction's size check, with no comments (their length 0 against their floor)
    if len(text) < options.min_output_size and options.min_output_comm_size > 0:
        return None
    return body
