"""Per-site overrides of the clean stage, for the sites a team cares most about.

The TOML file named by ``NEWSQ_SITES_FILE`` holds per-site settings, one table per host
(``"*.example.com"``: that domain and every subdomain; an exact host wins over a
pattern). For the clean stage: XPath expressions of blocks to remove before extraction
(``prune``) and, or, the XPath of the block(s) to take the article from (``body``)::

    ["*.example.com"]                    # example.com, www.example.com, news.example.com
    prune = ["//div[@class='newsletter']", "//aside[@id='more']"]

    ["www.paper.example"]
    body = "//div[@id='story-body']"     # only this block is extracted

Every expression is compiled when the file is read, so a typo is one line at start-up.
"""

from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass
from functools import cache
from urllib.parse import urlsplit

from lxml import etree
from lxml.html import HtmlElement
from lxml.html import builder as E

from newsq.errors import ConfigError


@dataclass(frozen=True)
class SiteRule:
    """What to do differently on one site's pages."""

    prune: tuple[str, ...] = ()
    body: str | None = None


@dataclass(frozen=True)
class SiteRules:
    """The rules of a file, by host."""

    by_host: dict[str, SiteRule]

    def for_url(self, url: str | None) -> SiteRule | None:
        """The rule of ``url``'s host, else of the nearest ``*.domain`` pattern over it."""
        host = (urlsplit(url).hostname or "") if url else ""
        rule = self.by_host.get(host)
        while rule is None and host:
            rule = self.by_host.get(f"*.{host}")
            _, _, host = host.partition(".")
        return rule


def _xpath(path: str, where: str) -> str:
    if not isinstance(path, str) or not path.strip():
        raise ConfigError(f"{where}: an XPath expression must be a non-empty string")
    try:
        etree.XPath(path)
    except etree.XPathSyntaxError as exc:
        raise ConfigError(f"{where}: {path!r} is not an XPath expression ({exc})") from None
    return path


def rule_for(path: str | None, url: str | None) -> SiteRule | None:
    """The rule of ``url``'s site in the sites file ``path`` (``NEWSQ_SITES_FILE``), if any."""
    return None if not path else load(path).for_url(url)


@cache
def load(path: str) -> SiteRules:
    """The rules in the TOML file at ``path``; ConfigError (one line) on a file that
    cannot be read, is not TOML, or holds an unknown key or a bad expression."""
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"NEWSQ_SITES_FILE: cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"NEWSQ_SITES_FILE: {path} is not TOML: {exc}") from None
    rules = {}
    for host, table in data.items():
        where = f"NEWSQ_SITES_FILE {path} [{host}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: a host's rules are a table (prune, body)")
        unknown = set(table) - {"prune", "body"}
        if unknown:
            raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r} (prune, body)")
        prune = table.get("prune", [])
        if not isinstance(prune, list):
            raise ConfigError(f"{where}: prune is a list of XPath expressions")
        body = table.get("body")
        rules[host.strip().lower().rstrip(".")] = SiteRule(
            prune=tuple(_xpath(p, where) for p in prune),
            body=None if body is None else _xpath(body, where),
        )
    return SiteRules(rules)


def apply(tree: HtmlElement, rule: SiteRule) -> HtmlElement:
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
