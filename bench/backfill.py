"""``newsq backfill`` of a 10,000-record WARC file beside ``newsq run`` of its pages.

The file (gzipped per record, as CC-NEWS): the dev corpus pages in word-shuffled text
variants (``bench.speed_pages``: each variant its own article), exact copies of some
under other URLs, near copies (a paragraph dropped, a line added), and records that are
no article (a PDF, an image, 404s, a revisit). The same HTML pages are served from
nginx (or the fallback server, said on stderr) for ``newsq run``. Both run embedded
with ``--workers N`` in this one run, one after the other, and the table gives:

- records/s of the backfill (whole command, start-up included) and pages/s of both
  on the same HTML pages: the backfill must be faster, it fetches nothing; the CPU
  seconds of each command (its workers and Redis, not the page server) and the load
  average as it ended;
- dedup precision and recall on the known copies (a copy found: its story is its
  original's; a false one: two pages of different originals in one story), both runs;
- events: ``newsq events`` lines against articles stored plus copies recorded.

``python -m bench.backfill [--records 10000] [--workers 2]``.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import lxml.html
import sqlalchemy as sa

from bench.speed_pages import variant
from bench.speed_serve import page_server
from newsq.demo.warc import Capture, write_warc
from tests.corpus_server import corpus

ROOT = Path(__file__).resolve().parent.parent
HTML = (("Content-Type", "text/html; charset=utf-8"),)
HOST_SLOTS = 64
"""Fetches in flight for the one host: its politeness off (no rate, slots for every
fetch thread), so ``newsq run`` is the cost of fetching, not of a host's limits."""
NOTE = "<p>Editor's note: this story was updated with comment from the agency.</p>"


@dataclass
class Corpus:
    """The pages of the run: path → (body, content type, status); the truth of each
    HTML path: the original it copies (itself for an original)."""

    files: dict[str, tuple[bytes, str, int]]
    truth: dict[str, str]


def near_copy(html: bytes, rng: random.Random) -> bytes:
    """The page with one long paragraph dropped and an editor's note added."""
    tree = lxml.html.document_fromstring(html)
    paras = [p for p in tree.iter("p") if len(p.text_content()) > 200]
    if len(paras) > 3:
        victim = rng.choice(paras[1:-1])
        victim.drop_tree()
    body = tree.find("body")
    if body is not None:
        body.append(lxml.html.fragment_fromstring(NOTE))
    out: bytes = lxml.html.tostring(tree, encoding="utf-8", doctype="<!DOCTYPE html>")
    return out


def build(records: int, seed: int = 11) -> Corpus:
    """About ``records`` captures: 70% originals, 10% exact copies, 10% near copies,
    10% no article (PDFs, images, 404s)."""
    rng = random.Random(seed)
    pages = corpus()
    ids = sorted(pages)
    files: dict[str, tuple[bytes, str, int]] = {}
    truth: dict[str, str] = {}
    originals = []
    for i in range(int(records * 0.7)):
        k, index = divmod(i, len(ids))
        path = f"/p/{ids[index][:16]}-{k}.html"
        files[path] = (variant(pages[ids[index]][0], ids[index], k), "text/html", 200)
        truth[path] = path
        originals.append(path)
    for i in range(int(records * 0.1)):
        source = rng.choice(originals)
        path = f"/exact/{i}.html"
        files[path], truth[path] = files[source], source
    for i in range(int(records * 0.1)):
        source = rng.choice(originals)
        path = f"/near/{i}.html"
        files[path] = (near_copy(files[source][0], rng), "text/html", 200)
        truth[path] = source
    for i in range(records - len(files) - 1):
        kind = i % 3
        if kind == 0:
            files[f"/files/{i}.pdf"] = (b"%PDF-1.4\n" + os.urandom(2000), "application/pdf", 200)
        elif kind == 1:
            files[f"/img/{i}.png"] = (b"\x89PNG\r\n\x1a\n" + os.urandom(2000), "image/png", 200)
        else:
            files[f"/gone/{i}.html"] = (b"<html><h1>Not found</h1></html>", "text/html", 404)
    return Corpus(files, truth)


def _headers(ctype: str, body: bytes) -> tuple[tuple[str, str], ...]:
    shown = f"{ctype}; charset=utf-8" if ctype == "text/html" else ctype
    return (("Content-Type", shown), ("Content-Length", str(len(body))))


def write_archive(data: Corpus, base: str, path: Path) -> int:
    captures = (
        Capture(base + p, status, "OK" if status == 200 else "Not Found", _headers(t, b), b)
        for p, (b, t, status) in data.files.items()
    )
    first = base + next(iter(data.truth))
    return write_warc(path, captures, revisits={first + "?again=1": first}, requests=False)


def _env(db: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSQ_")}
    env.update({"NEWSQ_DATABASE_URL": f"sqlite:///{db}", "NEWSQ_ALLOW_PRIVATE": "1",
                "NEWSQ_HOST_RATE": "0", "NEWSQ_HOST_CONCURRENCY": str(HOST_SLOTS),
                "NEWSQ_ROBOTS": "0", "NEWSQ_MAX_AGE_DAYS": "0",
                "PYTHONPATH": str(ROOT)})  # fmt: skip
    return env


def _cpu() -> float:
    """CPU seconds of this process's children that ended (each newsq command, its
    workers and its Redis with it; not the page server)."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def _newsq(args: list[str], env: dict[str, str], cwd: Path) -> tuple[float, str, float]:
    """(wall seconds, stdout, CPU seconds) of one newsq command."""
    started, cpu = time.perf_counter(), _cpu()
    done = subprocess.run([sys.executable, "-m", "newsq", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=7200)  # fmt: skip
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"bench: newsq {args[0]} failed:\n{done.stderr[-2000:]}")
    return wall, done.stdout, _cpu() - cpu


@dataclass
class Outcome:
    wall: float
    cpu: float
    load: float
    stored: int
    copies: int
    events: int
    precision: float
    recall: float


def judge(db: Path, base: str, data: Corpus, run: tuple[float, float, float],
          cwd: Path) -> Outcome:  # fmt: skip
    """The outcome of one run, ``run``: its (wall s, CPU s, load average)."""
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT url, duplicate_of FROM articles")).all()
    engine.dispose()
    truth = {base + p: base + t for p, t in data.truth.items()}
    copies = [r for r in rows if r.duplicate_of is not None]
    right = sum(1 for r in copies if truth.get(r.url) == truth.get(r.duplicate_of))
    groups = len(set(truth.values()))
    should = len(truth) - groups  # every page of a story but its first is a copy
    _, out, _ = _newsq(["events"], _env(db), cwd)
    events = sum(1 for line in out.splitlines() if line.strip())
    return Outcome(*run, len(rows) - len(copies), len(copies), events,
                   right / max(1, len(copies)), right / max(1, should))  # fmt: skip


def _one(kind: str, folder: Path, warc: Path, base: str, data: Corpus,
         args: argparse.Namespace) -> Outcome:  # fmt: skip
    """One ``newsq backfill`` of ``warc`` or ``newsq run`` of its HTML pages, embedded,
    in a folder (store and kept state) of its own."""
    folder.mkdir()
    db = folder / "n.db"
    if kind == "backfill":
        cmd = ["backfill", str(warc), "--workers", str(args.workers)]
    else:
        cmd = ["run", "--urls", str(warc.parent / "urls.txt"), "--workers", str(args.workers),
               "--timeout", "7200"]  # fmt: skip
    wall, out, cpu = _newsq(cmd, _env(db), folder)
    if kind == "backfill":
        print(out.rstrip(), file=sys.stderr)
    return judge(db, base, data, (wall, cpu, os.getloadavg()[0]), folder)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1, help="runs of each, alternating")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="newsq-bench-backfill-") as name:
        tmp = Path(name)
        data = build(args.records)
        docroot = tmp / "www"
        for path, (body, _, status) in data.files.items():
            if status == 200 and path.endswith(".html"):
                (docroot / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
                (docroot / path.lstrip("/")).write_bytes(body)
        (tmp / "nginx").mkdir()
        served = page_server(docroot, tmp / "nginx")
        try:
            base = served.base
            warc = tmp / "bench.warc.gz"
            records = write_archive(data, base, warc)
            html = sorted(base + p for p in data.truth)
            (tmp / "urls.txt").write_text("\n".join(html) + "\n")
            results: list[tuple[str, Outcome]] = []
            for r in range(args.rounds):  # alternate which goes first: the machine is shared
                for kind in ("backfill", "run") if r % 2 == 0 else ("run", "backfill"):
                    results.append((kind, _one(kind, tmp / f"{kind}{r}", warc, base, data, args)))
        finally:
            served.stop()
    other = records - len(html)
    print(f"backfill of {records} WARC records ({len(html)} HTML pages, {other} other), "
          f"--workers {args.workers}, pages from {served.kind}, {args.rounds} rounds")  # fmt: skip
    print()
    print("| run | wall s | CPU s | load | records/s | HTML pages/s | stored | copies "
          "| precision | recall | events | stored + copies |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for kind, o in results:
        rate = f"{records / o.wall:.1f}" if kind == "backfill" else "-"
        print(f"| newsq {kind} | {o.wall:.1f} | {o.cpu:.1f} | {o.load:.1f} | {rate} | "
              f"{len(html) / o.wall:.1f} | {o.stored} | {o.copies} | {o.precision:.3f} | "
              f"{o.recall:.3f} | {o.events} | {o.stored + o.copies} |")  # fmt: skip
    walls = {k: sum(o.wall for n, o in results if n == k) for k in ("backfill", "run")}
    cpus = {k: sum(o.cpu for n, o in results if n == k) for k in ("backfill", "run")}
    print(f"\nHTML pages/s, backfill / run (all rounds): {walls['run'] / walls['backfill']:.2f}x; "
          f"CPU, backfill / run: {cpus['backfill'] / cpus['run']:.2f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
