"""``newsq demo``: the whole pipeline on a bundled sample news site, embedded.

The site is built from the real pages of the dev corpus: a few outlets on loopback,
an RSS feed each, syndicated and edited copies of some stories at other outlets,
exact copies behind tracking parameters, an AMP page and a redirect, and a few broken
links. newsq reads the feeds and the extra URLs, and the summary shows what became
of each.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from rich.console import Console

from newsq.config.settings import DEFAULT_DATABASE_URL, AllowPrivate, Settings
from newsq.demo.site import SampleSite, SiteSpec

DEMO_DB = "newsq-demo.db"


def run_demo(args: argparse.Namespace, settings: Settings) -> int:
    from newsq.workers.run import run_pipeline

    console = Console()
    database_url = settings.database_url
    if database_url == DEFAULT_DATABASE_URL:  # a fresh store of its own, kept for a look
        Path(DEMO_DB).unlink(missing_ok=True)
        database_url = f"sqlite:///{DEMO_DB}"
    with SampleSite.build(SiteSpec()) as site, tempfile.TemporaryDirectory() as tmp:
        urls_file = Path(tmp) / "urls.txt"
        urls_file.write_text("\n".join(site.extra_urls) + "\n")
        demo_settings = dataclasses.replace(
            settings,
            database_url=database_url,
            # the sample site is ours, on loopback: let the fetcher reach it, unthrottled
            allow_private=AllowPrivate(all=True),
            host_rate=0.0,
            robots=False,
            max_age_days=0.0,  # its stories are dated 2019: an archive, read whole
        )
        expected = site.expected
        console.print(
            f"[bold]newsq demo[/bold]: {len(site.outlets)} outlets on loopback, "
            f"{len(site.feed_urls)} feeds + {len(site.extra_urls)} extra URLs; expecting "
            f"{expected.stories} stories from {expected.urls_in} distinct URLs "
            f"(store: {demo_settings.database_url})"
        )
        run_args = argparse.Namespace(feed=site.feed_urls, urls=[str(urls_file)], url=[],
                                      workers=args.workers, timeout=args.timeout,
                                      fetch_threads=32, keep_state=False)  # fmt: skip
        # the summary names each outlet as the site does, not by its loopback address
        names = {urlsplit(o.base_url).netloc: o.name for o in site.outlets}
        status = run_pipeline(run_args, demo_settings, console, outlets=names)
    if status == 0:
        console.print(
            f"what the sample site holds: {expected.stored} stories, {expected.duplicate} "
            f"copies of them, {_counted(expected.skipped)} to skip and "
            f"{_counted(expected.failed)} that fail: compare with the summary above"
        )
        console.print(f"the articles: NEWSQ_DATABASE_URL={database_url} newsq export")
    else:
        print("newsq: demo did not finish", file=sys.stderr)
    return status


def _counted(by_reason: Mapping[str, int]) -> str:
    """``{'no_content': 1, 'bad_content_type': 2}`` as ``3 (2 bad content type, 1 no content)``."""
    total = sum(by_reason.values())
    ranked = sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0]))
    parts = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in ranked)
    return f"{total} ({parts})" if parts else str(total)
