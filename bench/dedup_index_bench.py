"""Benchmark of the shared dedup index: memory, latency at scale, round trips, quality.

    python -m bench.dedup_index_bench [--n 100000] [--small 10000] [--samples 300]

On a throwaway redis-server of its own:

1. fills the index with ``--n`` synthetic articles spread over one dedup window (the
   steady state), through the bulk path: pipelines of the same Lua script with
   synthetic sketches (random MinHash signatures; storage is what they cost);
2. measures ``decide`` (sketch + one EVALSHA, on fresh realistic texts) when the index
   holds ``--small`` articles and again when it holds ``--n``;
3. Redis bytes per article: ``INFO memory`` used_memory growth over the fill / n;
4. round trips per decide, counted at the client;
5. pairwise precision and recall of the decisions on the gold texts and their edited
   copies (``newsq.demo.dedup_eval``), in shuffled order, in a fresh index.
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import time
import uuid
from dataclasses import replace
from typing import Any

import numpy as np
import redis

from newsq.config.settings import Settings
from newsq.dedup.config import DedupConfig
from newsq.dedup.index import DedupIndex
from newsq.dedup.sketch import Sketch, band_digests, sketch, words
from newsq.demo.dedup_eval import EDITS, edit, gold_texts
from newsq.workers.redis_server import RedisServer

BATCH = 500


class CountingRedis(redis.Redis):
    """A client that counts the commands it sends (each is one round trip here)."""

    calls = 0

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.calls += 1
        return super().execute_command(*args, **options)


def synthetic_url(i: int) -> str:
    return f"https://www.outlet{i % 5000}.example.com/news/2024/05/{i}-officials-say-the-story-slug"


def synthetic_sketch(rng: np.random.Generator, config: DedupConfig) -> Sketch:
    sig = rng.integers(0, 2**32, size=config.hashes, dtype=np.uint32)
    lead = rng.integers(0, 2**32, size=config.hashes, dtype=np.uint32)
    return Sketch(
        text_hash=rng.bytes(32).hex(),
        shingles=int(rng.integers(100, 1500)),
        sig=sig,
        bands=band_digests(b"F", sig, config.bands, config.rows),
        lead_bands=band_digests(b"L", lead, config.lead_bands, config.lead_rows),
    )


def synthetic_text(rng: random.Random, vocab: list[str]) -> str:
    paras = []
    for _ in range(rng.randint(5, 15)):
        paras.append(" ".join(rng.choices(vocab, k=rng.randint(25, 60))) + ".")
    return "\n\n".join(paras)


class Filler:
    """Loads synthetic articles through the bulk path, on a clock spread over one window."""

    def __init__(self, client: redis.Redis, settings: Settings, total: int) -> None:
        self.t0 = time.time()
        self.step = settings.dedup_window_days * 86400 / total
        self.loaded = 0
        self.index = DedupIndex(client, settings, clock=self.now)
        self.client = client
        self.rng = np.random.default_rng(1)

    def now(self) -> float:
        return self.t0 + self.loaded * self.step

    def fill_to(self, n: int) -> None:
        while self.loaded < n:
            pipe = self.client.pipeline(transaction=False)
            for _ in range(min(BATCH, n - self.loaded)):
                url = synthetic_url(self.loaded)
                canonical = url.replace("www.", "edition.") if self.loaded % 5 == 0 else None
                args = self.index.arguments(
                    url=url, final_url=url, canonical_url=canonical,
                    sk=synthetic_sketch(self.rng, self.index.config),
                )  # fmt: skip
                pipe.evalsha(self.index.sha, 1, self.index.base, *args)
                self.loaded += 1
            pipe.execute()


def measure_decides(filler: Filler, samples: int, seed: int) -> tuple[list[float], float, float]:
    """Decide latencies (ms) of fresh realistic texts, round trips and Redis CPU (µs)
    per decide (``INFO commandstats``: the script's own time inside Redis)."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(20000)]
    texts = [synthetic_text(rng, vocab) for _ in range(samples)]
    client: CountingRedis = filler.client  # type: ignore[assignment]
    client.config_resetstat()
    before = client.calls
    times = []
    for i, text in enumerate(texts):
        url = f"https://sample.example/{seed}/{i}"
        started = time.perf_counter()
        filler.index.decide(url=url, final_url=url, canonical_url=None, text=text, site=None)
        times.append((time.perf_counter() - started) * 1000)
    stats = client.info("commandstats").get("cmdstat_evalsha", {})
    calls = (client.calls - before) / samples
    return times, calls, float(stats.get("usec", 0)) / max(int(stats.get("calls", 0)), 1)


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def quality(client: redis.Redis, settings: Settings) -> dict[str, Any]:
    """Pairwise precision/recall and per-edit recall on the gold texts' edited copies."""
    index = DedupIndex(client, replace(settings, key_prefix=f"q{uuid.uuid4().hex[:8]}"))
    rng = random.Random(11)
    docs = []
    for s, (url, text) in enumerate(gold_texts()):
        docs.append((s, "original", url, text))
        for kind in EDITS:
            docs.append((s, kind, f"https://copy-{kind}.example/{s}", edit(text, kind, rng)[0]))
    rng.shuffle(docs)
    client.config_resetstat()
    stories = [
        index.decide(url=u, final_url=u, canonical_url=None, text=t, site=None).story_id
        for _, _, u, t in docs
    ]
    stats = client.info("commandstats").get("cmdstat_evalsha", {})
    tp = fp = fn = 0
    labelled = zip([d[0] for d in docs], stories, strict=True)
    for (a, sa), (b, sb) in itertools.combinations(labelled, 2):
        same, predicted = a == b, sa == sb
        tp += same and predicted
        fp += predicted and not same
        fn += same and not predicted
    # a copy is found when it shares the story id the majority of its story got
    majority = {}
    for s in {d[0] for d in docs}:
        ids = [st for d, st in zip(docs, stories, strict=True) if d[0] == s]
        majority[s] = max(set(ids), key=ids.count)
    per_edit = {
        kind: statistics.mean(
            st == majority[d[0]] for d, st in zip(docs, stories, strict=True) if d[1] == kind
        )
        for kind in EDITS
    }
    return {
        "docs": len(docs),
        "stories": len({d[0] for d in docs}),
        "precision": tp / (tp + fp) if tp + fp else 1.0,
        "recall": tp / (tp + fn) if tp + fn else 1.0,
        "per_edit": per_edit,
        "redis_us": float(stats.get("usec", 0)) / max(int(stats.get("calls", 0)), 1),
    }


def sketch_cost(config: DedupConfig) -> tuple[float, float | None]:
    """ms per gold article: numpy sketch, and datasketch's MinHash (as many perms) if
    installed."""
    texts = [t for _, t in gold_texts()]
    started = time.perf_counter()
    for t in texts:
        sketch(t, config)
    ours = (time.perf_counter() - started) * 1000 / len(texts)
    try:
        from datasketch import MinHash
    except ImportError:
        return ours, None
    started = time.perf_counter()
    for t in texts:
        ws, n = words(t), config.shingle
        m = MinHash(num_perm=config.hashes)
        m.update_batch([" ".join(ws[i : i + n]).encode() for i in range(len(ws) - n + 1)])
    return ours, (time.perf_counter() - started) * 1000 / len(texts)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="articles to index")
    parser.add_argument("--small", type=int, default=10_000, help="the small index size")
    parser.add_argument("--samples", type=int, default=300, help="decides timed per size")
    args = parser.parse_args(argv)
    with RedisServer() as server:
        client = CountingRedis.from_url(server.url)
        settings = Settings(broker_url=server.url, dedup_capacity=args.n, key_prefix="bench")
        filler = Filler(client, settings, args.n)
        base_mem = used_memory(client)
        started = time.perf_counter()
        filler.fill_to(args.small)
        small_times, small_rt, small_us = measure_decides(filler, args.samples, seed=1)
        filler.fill_to(args.n)
        fill_s = time.perf_counter() - started
        per_article = (used_memory(client) - base_mem) / (filler.loaded + 2 * args.samples)
        large_times, large_rt, large_us = measure_decides(filler, args.samples, seed=2)
        q = quality(client, settings)
        ours, theirs = sketch_cost(filler.index.config)

    rows = [
        ("articles indexed", f"{filler.loaded:,} (+{2 * args.samples} timed)"),
        ("fill time (bulk, pipelined Lua)", f"{fill_s:.0f} s"),
        ("Redis bytes / article (INFO used_memory)", f"{per_article:.0f}"),
        (f"decide p50 / p95 @ {args.small:,}", _ms(small_times)),
        (f"decide p50 / p95 @ {args.n:,}", _ms(large_times)),
        ("p50 ratio large / small", f"{pct(large_times, 50) / pct(small_times, 50):.2f}x"),
        ("round trips / decide", f"{small_rt:.2f} / {large_rt:.2f}"),
        ("Redis CPU µs / decide (commandstats)", f"{small_us:.0f} / {large_us:.0f}"),
        ("sketch ms/article numpy (datasketch)", f"{ours:.2f} ({theirs or float('nan'):.2f})"),
        (f"pairwise precision ({q['docs']} docs, {q['stories']} stories)", f"{q['precision']:.4f}"),
        ("pairwise recall", f"{q['recall']:.4f}"),
        ("Redis CPU µs / decide on those docs", f"{q['redis_us']:.0f}"),
    ]
    rows += [(f"  recall of '{k}' copies", f"{v:.3f}") for k, v in q["per_edit"].items()]
    width = max(len(r[0]) for r in rows)
    print(f"| {'measure':<{width}} | value |\n|{'-' * (width + 2)}|-------|")
    for name, value in rows:
        print(f"| {name:<{width}} | {value} |")


def _ms(times: list[float]) -> str:
    return f"{pct(times, 50):.2f} / {pct(times, 95):.2f} ms"


if __name__ == "__main__":
    main()
