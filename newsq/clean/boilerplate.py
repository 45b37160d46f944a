"""Boilerplate learned across a site's pages: paragraphs on many distinct pages are template.

Per site (the URL's host, else the article's ``site``), Redis keeps the number of
distinct pages of the site and, for each paragraph fingerprint, the number of distinct
pages carrying it: fields of one hash per site per generation (``boilerplate_ttl_days``
long), written on into the current one when read from the one before, so live templates
stay and one-off article paragraphs fade a generation or two after their last page.
One Lua script (``boilerplate.lua``) records a page and reads the counts back in a
single round trip (one HMGET and one HSET, not a command per paragraph), so every worker
process shares the same picture.

From a site's third page on, a paragraph found on half of its distinct pages (3 at
least, ``HoldConfig.young_pages``; ``boilerplate_min_pages`` at most) is dropped; on a
short page (a brief, under ``HoldConfig.short_chars``), where furniture is most of the
text and makes two outlets' briefs copies of each other, on 3 pages.

What counts as *distinct*: a page counts once its normalised whole text (lower-cased
words only) AND its address (canonical URL, else the URL, without query or fragment)
are both new to the site. So re-fetches, exact copies under other addresses, and
updated versions of a story at its own address (a changed byline, a corrected
figure, an appended update) count once, and one story's paragraphs never become
template however often it is fetched. Limitation: a near copy of a story under a new
address (a re-post with edits) counts as another page; it takes 3 such re-posts on a
young site, ``boilerplate_min_pages`` on an older one, before its paragraphs go.

A site's first pages cannot be judged alone, and a short one may be little more than
the site's "about us" blurb and membership appeal. So a short page in which no template
was found *waits* (``Hold``) when its site is young (under twice
``boilerplate_site_pages`` pages) or one of its lines is already on another of the
site's pages: while the site's new pages keep coming (``HoldConfig.quiet_seconds``) and
more of them are on their way, for at most ``max_seconds`` after it was first seen. It
is then judged with what is known, and nothing is lost: the pipeline keeps its body in
Redis and looks again (``newsq.pipeline``). A brief so keeps its own sentence and loses
its site's furniture before it is sketched for dedup; one whose headline is its
sentence (the text's repeat of the headline is dropped) gets its headline as its text.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib import resources
from typing import TypeGuard

import redis

from newsq import errors
from newsq.clean.rules import norm
from newsq.config.settings import Settings
from newsq.records import Article, Drop
from newsq.replies import text
from newsq.urls import host_of

LOGGER = logging.getLogger(__name__)

SCRIPT = resources.files("newsq.clean").joinpath("boilerplate.lua").read_text(encoding="utf-8")


# A held page is looked at again after as long as it has waited (at least the first
# step, at most until its site would turn quiet): soon after the last pages of a burst
# (the end of a run), and only a few times over a long one.
RELOOK_FIRST_S = 0.25
RELOOK_MIN_S = 0.1


@dataclass(frozen=True)
class HoldConfig:
    """When a short page waits for more of its site's pages."""

    young_pages: int = 3
    """A paragraph on fewer of a site's pages is never template."""
    short_chars: int = 1200
    """A page with less text may be mostly furniture: it may wait."""
    quiet_seconds: float = 2.0
    """It waits while the site had a new page within this long (and looks again then)."""
    max_seconds: float = 15.0
    """It waits at most this long after it was first seen."""
    young_factor: int = 2
    """A site is young, and its short pages may wait, until it has this many times
    ``boilerplate_site_pages`` pages."""


@dataclass(frozen=True)
class Hold:
    """Look at the page again in ``countdown`` seconds: its site's template is not known yet."""

    countdown: float


def fingerprint(text: str) -> str:
    """A short stable hex digest of ``text``."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()


class BoilerplateFilter:
    """Drops a site's template paragraphs, learnt from the pages it has seen.

    Make one per worker process (it registers its Lua script once) and share it.
    """

    def __init__(self, redis_client: redis.Redis, settings: Settings,
                 hold: HoldConfig | None = None) -> None:  # fmt: skip
        self._redis = redis_client
        self._settings = settings
        most = settings.boilerplate_hold_seconds
        self._hold = hold or HoldConfig(quiet_seconds=min(2.0, most), max_seconds=most)
        self._script = redis_client.register_script(SCRIPT)
        self._ttl = max(1, int(settings.boilerplate_ttl_days * 86400))

    def _key(self, site: str, *parts: str) -> str:
        # the hash tag keeps one site's keys in one cluster slot, as the script needs
        return ":".join((self._settings.key_prefix, "bp", f"{{{site}}}", *parts))

    def site_pages(self, site: str) -> int:
        """Distinct pages of ``site`` seen (the current generation's count, else the one
        before's, else a version before's own hash)."""
        generation = int(time.time() // self._ttl)
        pipe = self._redis.pipeline(transaction=False)
        for g in (generation, generation - 1):
            pipe.hget(self._key(site, "g", str(g)), "s")
        pipe.hget(self._key(site, "site"), "pages")
        current, before, old = pipe.execute()
        found = current or before
        return int(text(found).partition("|")[0]) if found else int(old or 0)

    def _need(self, site_pages: int, short: bool) -> int:
        """Distinct pages of the site a template paragraph is on (0: none can be yet).

        On a short page furniture is most of the text and costs the most (two outlets'
        briefs become copies): 3 pages are enough there. Else half the site's pages, 3
        at least, ``boilerplate_min_pages`` at most: a need that grows no faster than a
        template's count as the site's pages come."""
        young = self._hold.young_pages
        if site_pages < young:
            return 0
        if short:
            return min(young, self._settings.boilerplate_min_pages)
        return min(self._settings.boilerplate_min_pages, max(young, -(-site_pages // 2)))

    def strip(self, article: Article, *, url: str, may_wait: bool = True,
              coming: Callable[[], bool] | None = None) -> Article | Drop | Hold:  # fmt: skip
        """``article`` without its site's template paragraphs (recording this page).

        Returns the article unchanged when it has no site or too few pages of it were
        seen, ``Drop(no_content)`` when nothing but template is left, and ``Hold`` when
        the page should wait for more of its site's pages (``may_wait``: a short page of
        a young site). ``coming()``, asked only then, says whether more of the site's
        pages are on their way (queued for the host or being fetched): when none are,
        waiting cannot teach anything (what came meanwhile is counted) and the page is
        judged at once. A Redis error propagates (``redis.RedisError``): the
        caller retries the task.
        """
        # host and port: two servers on one host are two sites with two templates
        site = host_of(url).removeprefix("www.") or (article.site or "").strip().lower()
        lines = article.text.split("\n")
        keys = [norm(line) for line in lines]
        distinct = list(dict.fromkeys(k for k in keys if k))
        if not site or not distinct:
            return article
        hold = self._hold
        short = len(article.text) < hold.short_chars
        may_wait = may_wait and short and hold.max_seconds > 0
        address = (article.canonical_url or url).split("#", 1)[0].split("?", 1)[0]
        now = time.time()
        generation = int(now // self._ttl)
        counts = self._script(
            keys=[
                self._key(site, "site"),
                self._key(site, "g", str(generation)),
                self._key(site, "g", str(generation - 1)),
            ],
            args=[
                self._ttl,
                f"{now:.6f}",  # to the microsecond: "a later page came" is last > first
                "1" if may_wait else "0",
                (generation + 2) * self._ttl,
                "t" + fingerprint("\n".join(keys)),
                "a" + fingerprint(address.rstrip("/").lower()),
                *("p" + fingerprint(k) for k in distinct),
            ],
        )
        site_pages, first, last = int(counts[0]), _time(counts[1]), _time(counts[2])
        seen = [int(count) for count in counts[3:]]
        need = self._need(site_pages, short)
        template = {
            key for key, count in zip(distinct, seen, strict=True) if need and count >= need
        }
        if not template:
            # a young site's page (its furniture may be on none of its pages seen yet: a
            # site's first pages may be in other markup), or a line already on another
            # of the site's pages: wait while its pages keep coming, and not too long
            young = site_pages < hold.young_factor * self._settings.boilerplate_site_pages
            doubt = young or max(seen) > 1
            waited, quiet = now - first, now - last
            wait = may_wait and doubt and waited < hold.max_seconds and quiet < hold.quiet_seconds
            # it waits only while more of its site is on the way: what already came
            # is counted, so with none coming waiting teaches nothing
            if wait and (coming is None or coming()):
                return Hold(relook_after(hold, waited, quiet))
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
            if _is_sentence(article.title):  # a brief whose headline is its news (its
                return replace(article, text=article.title.strip())  # body repeated it)
            return Drop(errors.NO_CONTENT, "only site template text left")
        return replace(article, text=text)


def relook_after(hold: HoldConfig, waited: float, quiet: float) -> float:
    """Seconds until a held page is looked at again (see RELOOK_FIRST_S)."""
    again = max(min(max(waited, RELOOK_FIRST_S), hold.quiet_seconds - quiet), RELOOK_MIN_S)
    return min(again, hold.max_seconds - waited)


def _is_sentence(title: str | None) -> TypeGuard[str]:
    """True for a headline that is a whole sentence (8 words or more, ending as one).

    Text equal to the headline is dropped from the body (trafilatura drops a repeat of
    the heading, newsq's rules the heading), so a brief whose headline is its one
    sentence comes out as its site's furniture alone: its headline is then its text.
    """
    if not title:
        return False
    return len(norm(title).split()) >= 8 and title.rstrip()[-1:] in (".", "!", "?")


def _time(value: bytes | str | int | None) -> float:
    """A time the script returned ('' when it had none: long ago)."""
    try:
        return float(value.decode() if isinstance(value, bytes) else value or 0)
    except ValueError:
        return 0.0
