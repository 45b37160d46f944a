"""Instructions Redis spends on one dedup decide, by kind, for two checkouts side by side.

    python -m bench.script_cost [--per-generation 600] [--each 60] [--headroom 1]
                                [--before DIR]

The time a Lua call takes moves twofold with this host's load; the instructions the
server runs for it do not. So each checkout gets a fresh ``redis-server`` under
``valgrind --tool=callgrind``, and its own :class:`~newsq.dedup.index.DedupIndex`
(imported from that checkout, in a child process) fills the five live generations
with ``--per-generation`` articles each, the capacity set so the tables' buckets hold
what they hold at capacity (``--headroom H``: a capacity H times what is filed, the
buckets 1/H as full). Then it decides ``--each`` copies of every kind: new
texts, near copies (a paragraph dropped), exact copies (another url) and replays (the
same url again), the server's instructions counted around each kind
(``callgrind_control --zero`` and ``--dump``). The texts are the dev corpus's gold
texts, paragraphs drawn at random (one seed: the same copies for every checkout).
The count includes reading the request and writing the reply, not the client's side.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.clean_bench import load_pages
from bench.redis_cost import _revision
from bench.startup import shim
from bench.tables import markdown
from newsq.workers.redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent

KINDS = ("new", "near", "exact", "replay")
SEED = 20261206


def _texts(paragraphs: list[str], count: int, rng: random.Random) -> list[str]:
    return ["\n".join(rng.sample(paragraphs, rng.randint(4, 14))) for _ in range(count)]


def child(pid: int, port: int, per_generation: int, each: int, headroom: int) -> None:
    """Fill the index, then decide each kind between a zero and a dump of callgrind."""
    import redis

    from newsq.config.settings import Settings
    from newsq.dedup.config import DedupConfig
    from newsq.dedup.index import DedupIndex

    generations = DedupConfig.generations  # per window: generations + 1 live ones are read
    settings = Settings.from_env({
        "NEWSQ_BROKER_URL": f"redis://127.0.0.1:{port}/0",
        "NEWSQ_DEDUP_CAPACITY": str(per_generation * generations * headroom),
    })  # fmt: skip
    client = redis.Redis(port=port)
    rng = random.Random(SEED)
    paragraphs = [p for page in load_pages() for p in page.gold.split("\n") if len(p) > 60]
    stored = _texts(paragraphs, per_generation * (generations + 1), rng)
    fresh = _texts(paragraphs, each, rng)
    clock = [0.0]
    index = DedupIndex(client, settings, clock=lambda: clock[0])
    span = index.config.generation_seconds
    now_gen = int((time.time() + 10 * index.config.window_seconds) // span)  # none expire
    filed: list[tuple[str, str]] = []
    for n, text in enumerate(stored):
        clock[0] = (now_gen - generations + n // per_generation) * span + 1 + n % per_generation
        url = f"http://outlet{n % 40}.test/story/{n}"
        index.decide(url=url, final_url=url, canonical_url=None, text=text, site=None)
        filed.append((url, text))
    clock[0] = now_gen * span + span / 2
    picks = rng.sample(filed, 3 * each)
    copies = {
        "new": [(f"http://new{n % 40}.test/a/{n}", t) for n, t in enumerate(fresh)],
        "near": [(f"http://near{n % 40}.test/a/{n}", "\n".join(t.split("\n")[:-1]))
                 for n, (_, t) in enumerate(picks[:each])],
        "exact": [(f"http://exact{n % 40}.test/a/{n}", t)
                  for n, (_, t) in enumerate(picks[each : 2 * each])],
        "replay": picks[2 * each :],
    }  # fmt: skip
    sketches = {kind: [(u, index.sketch(t)) for u, t in pairs] for kind, pairs in copies.items()}
    for kind in KINDS:
        verdicts: dict[str, int] = {}
        subprocess.run(["callgrind_control", "--zero", str(pid)], check=True, capture_output=True)
        for url, sk in sketches[kind]:
            verdict = index.decide(
                url=url, final_url=url, canonical_url=None, text="", site=None, sk=sk
            )
            verdicts[verdict.kind] = verdicts.get(verdict.kind, 0) + 1
        subprocess.run(["callgrind_control", f"--dump={kind}", str(pid)], check=True,
                       capture_output=True)  # fmt: skip
        print(json.dumps({"kind": kind, "decides": each, "verdicts": verdicts}), flush=True)


def _dumps(folder: Path) -> dict[str, int]:
    """Instructions of each named dump callgrind wrote in ``folder``."""
    counts = {}
    for path in folder.glob("cg.out.*"):
        trigger, total = None, None
        for line in path.read_text().splitlines():
            if line.startswith("desc: Trigger: dump "):
                trigger = line.removeprefix("desc: Trigger: dump ").strip()
            elif line.startswith("summary:"):
                total = int(line.split()[1])
        if trigger is not None and total is not None:
            counts[trigger] = total
    return counts


def measure(
    name: str, pythonpath: Path | None, args: argparse.Namespace, tmp: Path
) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """One checkout's instructions and verdicts per kind."""
    folder = tmp / name
    folder.mkdir()
    callgrind = ("valgrind", "--tool=callgrind", f"--callgrind-out-file={folder}/cg.out",
                 "--dump-instr=no", f"--log-file={folder}/valgrind.log")  # fmt: skip
    server = RedisServer(wrapper=callgrind).start(timeout=120)
    assert server.proc is not None
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSQ_")}
        env.pop("PYTHONPATH", None)
        if pythonpath is not None:
            env["PYTHONPATH"] = str(pythonpath)
        run = subprocess.run(
            [sys.executable, "-m", "bench.script_cost", "--child", str(server.proc.pid),
             str(server.port), str(args.per_generation), str(args.each), str(args.headroom)],
            env=env, capture_output=True, text=True, check=False, cwd=ROOT,
        )  # fmt: skip
        if run.returncode:
            raise SystemExit(f"{name}: the child failed:\n{run.stderr}")
        verdicts = {}
        for line in run.stdout.splitlines():
            row = json.loads(line)
            verdicts[row["kind"]] = row["verdicts"]
    finally:
        server.stop()
    return _dumps(folder), verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-generation", type=int, default=600,
                        help="articles filed per generation")  # fmt: skip
    parser.add_argument("--each", type=int, default=60, help="decides measured per kind")
    parser.add_argument("--headroom", type=int, default=1, help="capacity / articles filed")
    parser.add_argument("--before", type=Path, default=None, help="another checkout")
    parser.add_argument("--child", nargs=5, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("bench.script_cost needs valgrind (Debian: apt-get install valgrind)")
    with tempfile.TemporaryDirectory(prefix="script-cost-") as name:
        tmp = Path(name)
        runs: list[tuple[str, Path | None]] = []
        if args.before is not None:
            runs.append(("before", shim(args.before.resolve(), tmp / "shim")))
        runs.append(("after", None))
        results = {run: measure(run, path, args, tmp) for run, path in runs}
    print(f"# Redis instructions per dedup decide: {args.per_generation} articles in each of "
          f"5 live generations, capacity {args.headroom}x that, {args.each} decides per kind; "
          f"after = {_revision(ROOT)}\n")  # fmt: skip
    head = ["kind", *(f"{run} (k instr / decide)" for run in results)]
    if len(results) == 2:
        head.append("after ÷ before")
    rows = [head]
    for kind in KINDS:
        row = [kind]
        per = [results[run][0][kind] / args.each / 1000 for run in results]
        row += [f"{v:,.0f}" for v in per]
        if len(per) == 2:
            row.append(f"{per[1] / per[0]:.2f}")
        rows.append(row)
    print(markdown(rows))
    print()
    for run, (_, verdicts) in results.items():
        print(f"{run} verdicts: " + "; ".join(f"{k}: {v}" for k, v in verdicts.items()))


if __name__ == "__main__":
    main()
