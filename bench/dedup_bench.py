"""End-to-end dedup benchmark: a surge of syndicated copies through real newsq workers.

    python -m bench.dedup_bench [--stories 96 --negatives 24 --briefs 8 --member-briefs 30
                                 --outlets 6]

1. builds a sample site (``newsq.demo.site``): every outlet on its own 127.0.0.N host,
   syndicated and edited copies, exact variants, hard negatives (other stories on the
   same templates), short local briefs, and briefs of one or two real sentences on
   outlets whose every page carries an about-us blurb and a membership appeal (about
   one in four syndicated word for word: true copies; the others must stay apart);
2. runs ``newsq run --feed ... --urls extra.txt`` as a user would, on a throwaway Redis
   (``newsq.workers.redis_server.RedisServer``) and a temp SQLite store, while a MONITOR connection
   counts the commands the workers send to the dedup keys;
3. reads every URL's story_id back from the store and scores "same story" pairwise
   over every article URL in the site's truth, and reads what the index costs in Redis.

The CORPUS holds 121 stories: negatives are clipped so that stories, negatives and the
stories set apart for the member briefs' sentences fit in it.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from math import comb
from pathlib import Path
from typing import Any

import redis

from newsq.demo.build import brief_docs
from newsq.demo.pages import BRIEF_TOPICS
from newsq.demo.site import SampleSite, SiteSpec
from newsq.urls import normalize
from newsq.workers.redis_server import RedisServer

CORPUS_STORIES = 121
PREFIX = "bench"
DEDUP_TAG = f"{{{PREFIX}:dedup}}"
BOILERPLATE_TAG = f"{PREFIX}:bp:{{"  # then the site's hash tag
SMALL_INDEX = (
    "(MEMORY USAGE; buckets are sized for NEWSQ_DEDUP_CAPACITY, so a small index pays a"
    " key per entry: at scale see bench.dedup_index_bench)"
)
TARGETS = {"precision": 0.995, "recall": 0.98}


def pairwise(truth: dict[str, str], found: dict[str, str]) -> dict[str, float]:
    """Pairwise precision, recall and F1 of ``found`` (url -> cluster) against ``truth``."""
    cells = Counter((truth[u], found[u]) for u in truth)
    same_both = sum(comb(n, 2) for n in cells.values())
    same_truth = sum(comb(n, 2) for n in Counter(truth.values()).values())
    same_found = sum(comb(n, 2) for n in Counter(found[u] for u in truth).values())
    p = same_both / same_found if same_found else 1.0
    r = same_both / same_truth if same_truth else 1.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


class DedupMonitor:
    """Counts, through MONITOR, the client commands (not Lua's own) on the dedup keys,
    and the boilerplate script's calls and the commands run inside them."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.commands: Counter[str] = Counter()
        self.boilerplate: Counter[str] = Counter()  # calls, and the Lua commands inside
        self.reconnects = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self._listen():
                    return
            except (redis.TimeoutError, redis.ConnectionError):
                self.reconnects += 1  # a read timed out: MONITOR again, a few lost

    def _listen(self) -> bool:
        with self.client.monitor() as mon:
            self._started.set()
            for event in mon.listen():
                command = str(event.get("command", ""))
                if self._stop.is_set() and command.startswith("ECHO bench-stop"):
                    return True
                lua = event.get("client_type") == "lua"
                if BOILERPLATE_TAG in command:
                    self.boilerplate["lua" if lua else "calls"] += 1
                if lua or DEDUP_TAG not in command:
                    continue
                self.commands[command.split(" ", 1)[0].upper()] += 1
        return False

    def __enter__(self) -> DedupMonitor:
        self._started = threading.Event()
        self._thread.start()
        self._started.wait(5)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self.client.echo("bench-stop")
        self._thread.join(timeout=10)


def dedup_memory(client: redis.Redis) -> tuple[int, int]:
    """Bytes held by the dedup keys (MEMORY USAGE, exact), and the keys' count."""
    total, keys = 0, 0
    for key in client.scan_iter(match=f"{DEDUP_TAG}*", count=1000):
        total += int(client.memory_usage(key, samples=0) or 0)
        keys += 1
    return total, keys


def store_stories(db: Path) -> dict[str, tuple[str, str | None, str | None]]:
    """url -> (state, story_id, match) from the store's ``urls`` table."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute('SELECT url, state, story_id, "match" FROM urls').fetchall()
    return {url: (state, story, match) for url, state, story, match in rows}


def run(args: argparse.Namespace) -> int:
    spare = CORPUS_STORIES - args.stories - brief_docs(args.member_briefs)
    negatives = max(0, min(args.negatives, spare))
    spec = SiteSpec(stories=args.stories, outlets=args.outlets, negatives=negatives,
                    briefs=min(args.briefs, BRIEF_TOPICS), member_briefs=args.member_briefs,
                    separate_hosts=True, seed=args.seed)  # fmt: skip
    server = RedisServer().start()
    client = redis.Redis.from_url(server.url)
    try:
        with SampleSite.build(spec) as site, tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            (work / "extra.txt").write_text("\n".join(site.extra_urls) + "\n")
            env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSQ_")}
            env.update(NEWSQ_BROKER_URL=server.url, NEWSQ_DATABASE_URL=f"sqlite:///{work}/b.db",
                       NEWSQ_ALLOW_PRIVATE="1", NEWSQ_HOST_RATE="0", NEWSQ_ROBOTS="0",
                       # the sample site's stories are from 2019: no age limit
                       NEWSQ_KEY_PREFIX=PREFIX, NEWSQ_MAX_AGE_DAYS="0")  # fmt: skip
            feeds = [arg for url in site.feed_urls for arg in ("--feed", url)]
            cli = [str(Path(sys.executable).with_name("newsq")), "run", *feeds,
                   "--urls", str(work / "extra.txt"), "--workers", str(args.workers),
                   "--timeout", str(args.timeout)]  # fmt: skip
            client.config_resetstat()
            started = time.perf_counter()
            with DedupMonitor(redis.Redis.from_url(server.url)) as monitor:
                done = subprocess.run(cli, cwd=work, env=env, capture_output=True, text=True)
            elapsed = time.perf_counter() - started
            if done.returncode != 0:
                print(done.stdout[-2000:], done.stderr[-2000:], sep="\n", file=sys.stderr)
                return 1
            stored = store_stories(work / "b.db")
            truth = site.truth
            indexed = int(client.get(f"{DEDUP_TAG}:seq") or 0)
            memory, keys = dedup_memory(client)
            evalsha = client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
            report(site, truth, stored, monitor, indexed, memory, keys, evalsha, elapsed,
                   args)  # fmt: skip
    finally:
        client.close()
        server.stop()
    return 0


def report(site: SampleSite, truth: dict[str, str | None],
           stored: dict[str, tuple[str, str | None, str | None]], monitor: DedupMonitor,
           indexed: int, memory: int, keys: int, evalsha: int, elapsed: float,
           args: argparse.Namespace) -> None:  # fmt: skip
    """Print the benchmark table."""
    want: dict[str, str] = {}
    got: dict[str, str] = {}
    missing = []
    for url, story in truth.items():
        if story is None:
            continue
        key = normalize(url)
        row = stored.get(key)
        if row is None or row[1] is None:
            missing.append(url)
            continue
        want[key], got[key] = story, row[1]
    scores = pairwise(want, got)
    ids_of: dict[str, set[str]] = defaultdict(set)
    stories_in: dict[str, Counter[str]] = defaultdict(Counter)
    for url in want:
        ids_of[want[url]].add(got[url])
        stories_in[got[url]][want[url]] += 1
    split = sorted(s for s, ids in ids_of.items() if len(ids) > 1)
    wrong = sum(sum(c.values()) - max(c.values()) for c in stories_in.values())
    articles = sum(1 for s, _, _ in stored.values() if s in ("stored", "duplicate"))
    commands, bp = monitor.commands, monitor.boilerplate
    cleaned = sum(1 for s, _, _ in stored.values() if s in ("stored", "duplicate", "skipped"))
    matches = Counter(m for s, _, m in stored.values() if s in ("stored", "duplicate"))
    exp = site.expected
    rows = [
        ("site", f"{args.stories} stories (+{site.spec.negatives} negatives, "
                 f"{site.spec.briefs} briefs, {site.spec.member_briefs} member briefs), "
                 f"{args.outlets} outlets, {exp.urls_in} URLs"),
        ("run", f"{elapsed:.1f} s, {args.workers} workers"),
        ("article URLs scored", f"{len(want)} ({len(missing)} without a story_id)"),
        ("stories in truth / stored", f"{len(ids_of)} / {len(stories_in)}"),
        ("pairwise precision", f"{scores['precision']:.4f}  (target >= {TARGETS['precision']})"),
        ("pairwise recall", f"{scores['recall']:.4f}  (target >= {TARGETS['recall']})"),
        ("pairwise F1", f"{scores['f1']:.4f}"),
        ("stories stored more than once", f"{len(split)}  (target 0) {' '.join(split[:5])}"),
        ("URLs merged into a wrong story", f"{wrong}  (target 0)"),
        ("verdicts", " ".join(f"{k}={v}" for k, v in sorted(matches.items()))),
        ("dedup keys / indexed texts", f"{keys} / {indexed}"),
        ("Redis bytes per indexed text", f"{memory / max(indexed, 1):.0f}  " + SMALL_INDEX),
        ("dedup round trips per article", f"{sum(commands.values()) / max(articles, 1):.3f}"
                                          f"  {dict(commands)} over {articles} articles"),
        ("boilerplate calls per URL", f"{bp['calls'] / max(cleaned, 1):.3f}  ({bp['calls']} over "
                                      f"{cleaned} URLs stored, duplicate or skipped; a page "
                                      "that waits is looked at again)"),
        ("Redis commands per boilerplate call", f"{bp['lua'] / max(bp['calls'], 1):.1f}"
                                                "  (run inside its Lua script)"),
        ("EVALSHA calls, all scripts", f"{evalsha} (commandstats; dedup, boilerplate, ledger)"),
        ("MONITOR reconnects", f"{monitor.reconnects}  (a few commands uncounted each)"),
    ]  # fmt: skip
    width = max(len(k) for k, _ in rows)
    print(f"| {'measure':<{width}} | value |\n|{'-' * (width + 2)}|-------|")
    for key, value in rows:
        print(f"| {key:<{width}} | {value} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stories", type=int, default=96)
    parser.add_argument("--negatives", type=int, default=24)
    parser.add_argument("--briefs", type=int, default=BRIEF_TOPICS)
    parser.add_argument("--member-briefs", type=int, default=30)
    parser.add_argument("--outlets", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--seed", type=int, default=7)
    sys.exit(run(parser.parse_args()))


if __name__ == "__main__":
    main()
