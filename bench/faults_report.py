"""Run the fault-injection suite N times and print one table of what each case measured.

    python -m bench.faults_report [--runs 3]

Each case prints a ``FAULTS {json}`` line (tests/faults/test_faults.py); this collects
them: the end state counts (0 lost, 0 stored twice and 0 wrongly failed are asserted
by the tests themselves), the case's wall time, and its own figures (redelivery
delay after a whole-worker SIGKILL, warm-shutdown time, ...).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys


def run_once() -> tuple[int, list[dict[str, object]]]:
    """One run of the suite: (pytest exit code, the FAULTS records)."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rfE",
            "-s",
            "-p",
            "no:cacheprovider",
            "-m",
            "faults",
            "tests/faults",
        ],
        capture_output=True,
        text=True,
    )
    # with -q, pytest's progress dots share a line with the next case's output
    records = [
        json.loads(line[line.index("FAULTS {") + 7 :])
        for line in done.stdout.splitlines()
        if "FAULTS {" in line
    ]
    for line in done.stdout.splitlines():  # a case that failed before it could report
        if line.startswith(("FAILED ", "ERROR ")):
            records.append({"case": line.split("::")[-1].split(" ")[0], "seconds": "-",
                            "error": line[:200]})  # fmt: skip
    return done.returncode, records


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print("| run | case | s | stored | duplicate | failed | figures |")
    print("|---|---|---|---|---|---|---|", flush=True)
    worst = 0
    for run in range(1, args.runs + 1):
        code, records = run_once()
        worst = max(worst, code)
        for r in records:
            extra = {
                k: v
                for k, v in r.items()
                if k not in ("case", "seconds", "stored", "duplicate", "failed")
            }
            print(
                f"| {run} | {r['case']} | {r['seconds']} | {r.get('stored', 0)} | "
                f"{r.get('duplicate', 0)} | {r.get('failed', 0)} | {json.dumps(extra)} |",
                flush=True,
            )
        print(f"| {run} | pytest exit code | {code} | | | | |", flush=True)
    return worst


if __name__ == "__main__":
    sys.exit(main())
