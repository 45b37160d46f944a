"""Bounds on the clean stage's work per page, so that one page cannot hold a worker.

The clean stage runs in worker threads, where a signal-based alarm cannot interrupt it,
so the bounds are checked by the stage itself:

1. tags: a C-speed count of ``<`` in the markup, before it is parsed
2. elements: lxml's count of the parsed tree's elements, before any extraction pass
3. time: a budget checked between the passes (metadata, trafilatura, second opinion,
   continuations)

A page over a bound ends as ``Drop(too_complex)``: skipped, and the worker moves on.
``bench/README.md`` gives the dev corpora's worst pages beside these bounds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lxml.html import HtmlElement

    from newsq.config.settings import Settings

MAX_ELEMENTS = 20_000
"""Elements of a parsed page (``NEWSQ_CLEAN_MAX_ELEMENTS``)."""
TAGS_PER_ELEMENT = 4
"""``<`` allowed in the markup per element allowed: an element has one or two tags, and
scripts and text hold some ``<`` of their own."""
TIME_BUDGET = 10.0
"""Seconds of clean-stage work per page (``NEWSQ_CLEAN_TIME_BUDGET``)."""


class TooComplex(Exception):
    """A page went over one of its bounds; the message says which."""


@dataclass(frozen=True)
class CleanLimits:
    """How much work the clean stage may spend on one page."""

    max_elements: int = MAX_ELEMENTS
    time_budget: float = TIME_BUDGET

    @property
    def max_tags(self) -> int:
        return TAGS_PER_ELEMENT * self.max_elements

    @classmethod
    def from_settings(cls, settings: Settings) -> CleanLimits:
        return cls(settings.clean_max_elements, settings.clean_time_budget)

    def check_markup(self, html: str) -> None:
        """Raise :class:`TooComplex` when ``html`` holds too many tags to parse."""
        tags = html.count("<")
        if tags > self.max_tags:
            raise TooComplex(f"{tags} tags in the markup (at most {self.max_tags})")

    def check_tree(self, tree: HtmlElement) -> None:
        """Raise :class:`TooComplex` when ``tree`` has too many elements to extract."""
        elements = int(tree.xpath("count(//*)"))
        if elements > self.max_elements:
            raise TooComplex(f"{elements} elements (at most {self.max_elements})")

    def budget(self) -> Budget:
        return Budget(self.time_budget, time.perf_counter())


@dataclass(frozen=True)
class Budget:
    """The time one page may take, started when the page was."""

    seconds: float
    started: float

    def check(self, stage: str) -> None:
        """Raise :class:`TooComplex` when the budget is spent before ``stage``."""
        spent = time.perf_counter() - self.started
        if spent > self.seconds:
            raise TooComplex(f"{spent:.1f} s spent before {stage} (budget {self.seconds:g} s)")
