"""A site's clean-stage rules (``prune``, ``body`` of ``NEWSQ_SITES_FILE``) applied to a page.

The file and its other keys are :mod:`newsq.sites`; its expressions were compiled when
it was read, so a typo is one line at start-up.
"""

from __future__ import annotations

import copy

from lxml.html import HtmlElement
from lxml.html import builder as E

from newsq.sites import Site


def apply(tree: HtmlElement, rule: Site) -> HtmlElement:
    """A copy of ``tree`` with ``rule``'s blocks removed, and cut down to its body
    block(s) when the rule names them and the page has them (``tree`` is left as it is)."""
    page = copy.deepcopy(tree)
    for path in rule.prune:
        for el in page.xpath(path):
            if isinstance(el, HtmlElement) and el.getparent() is not None:
                el.drop_tree()  # its tail text stays with its neighbours
    if rule.body is not None:
        blocks = [el for el in page.xpath(rule.body) if isinstance(el, HtmlElement)]
        if blocks:
            head = page.find("head")
            head = E.HEAD() if head is None else copy.deepcopy(head)
            page = E.HTML(head, E.BODY(*(copy.deepcopy(el) for el in blocks)))
    return page
