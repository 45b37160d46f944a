"""Boilerplate learned across a site's pages: paragraphs on many distinct pages are template.

Per site (the URL's host, else the article's ``site``), Redis keeps for each paragraph
fingerprint the number of distinct pages carrying it, and the number of distinct pages
of the site, all with an expiry refreshed on use (live templates stay, one-off article
paragraphs fade). One Lua script (``lua/boilerplate.lua``) records a page and reads the
counts back in a single round trip, so every worker process shares the same picture.

Once the site has ``boilerplate_site_pages`` distinct pages, a paragraph found on
``boilerplate_min_pages`` or more of them is dropped.

What counts as *distinct*: a page counts once its normalised whole text (lower-cased
words only) AND its address (canonical URL, else the URL, without query or fragment)
are both new to the site. So re-fetches, exact copies under other addresses, and
updated versions of a story at its own address (a changed byline, a corrected
figure, an appended update) count once, and one story's paragraphs never become
template however often it is fetched. Limitation: a near copy of a story under a new
address (a re-post with edits) counts as another page; it takes
``boilerplate_min_pages`` such re-posts on one site before its paragraphs are dropped.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import replace
from importlib import resources

import redis

from newsq import errors
from newsq.clean.rules import norm
from newsq.config.settings import Settings
from newsq.records import Article, Drop
from newsq.urls import host_of

LOGGER = logging.getLogger(__name__)

SCRIPT = resources.files("newsq.clean").joinpath("boilerplate.lua").read_text(encoding="utf-8")


def fingerprint(text: str) -> str:
    """A short stable hex digest of ``text``."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()


class BoilerplateFilter:
    """Drops a site's template paragraphs, learnt from the pages it has seen.

    Make one per worker process (it registers its Lua script once) and share it.
    """

    def __init__(self, redis_client: redis.Redis, settings: Settings) -> None:
        self._redis = redis_client
        self._settings = settings
        self._script = redis_client.register_script(SCRIPT)
        self._ttl = max(1, int(settings.boilerplate_ttl_days * 86400))

    def _key(self, site: str, *parts: str) -> str:
        # the hash tag keeps one site's keys in one cluster slot, as the script needs
        return ":".join((self._settings.key_prefix, "bp", f"{{{site}}}", *parts))

    def strip(self, article: Article, *, url: str) -> Article | Drop:
        """``article`` without its site's template paragraphs (recording this page).

        Returns the article unchanged when it has no site or too few pages of it were
        seen, and ``Drop(no_content)`` when nothing but template is left. A Redis error
        propagates (``redis.RedisError``): the caller retries the task.
        """
        # host and port: two servers on one host are two sites with two templates
        site = host_of(url).removeprefix("www.") or (article.site or "").strip().lower()
        lines = article.text.split("\n")
        keys = [norm(line) for line in lines]
        distinct = list(dict.fromkeys(k for k in keys if k))
        if not site or not distinct:
            return article
        address = (article.canonical_url or url).split("#", 1)[0].split("?", 1)[0]
        prints = [fingerprint(k) for k in distinct]
        counts = self._script(
            keys=[
                self._key(site, "text", fingerprint("\n".join(keys))),
                self._key(site, "addr", fingerprint(address.rstrip("/").lower())),
                self._key(site, "pages"),
                *(self._key(site, "p", fp) for fp in prints),
            ],
            args=[self._ttl],
        )
        site_pages = int(counts[0])
        if site_pages < self._settings.boilerplate_site_pages:
            return article
        template = {
            key
            for key, count in zip(distinct, counts[1:], strict=True)
            if int(count) >= self._settings.boilerplate_min_pages
        }
        if not template:
            return article
        kept = [line for line, key in zip(lines, keys, strict=True) if key not in template]
        LOGGER.info(
            "url=%s site=%s dropped %d template paragraph(s)",
            url,
            site,
            len(lines) - len(kept),
        )
        text = "\n".join(kept).strip()
        if not norm(text):
            return Drop(errors.NO_CONTENT, "only site template text left")
        return replace(article, text=text)
