"""The clean stage's bounds beside the dev corpora's worst pages and the worst pages
the bounds still let through.

Run from the repository root (the corpora default to ``/work/shared/corpus``)::

    python -m bench.clean_bounds [--corpus DIR] [--top 5]

For each page of ``aeb-dev`` and ``traf-eval-dev`` (decoded as the fetch stage
decodes): its ``<`` count, its element count after the parse and its clean time; then,
for synthetic pages of one repeated shape just under ``NEWSQ_CLEAN_MAX_ELEMENTS``, the
clean time (without the time budget) and what the default bounds make of them.
"""

from __future__ import annotations

import argparse
import gzip
import time
from pathlib import Path

from newsq.clean.extract import extract, parse
from newsq.clean.limits import CleanLimits
from newsq.fetch.decoding import decode_html
from newsq.records import Drop

UNBOUNDED = CleanLimits(max_elements=10**9, time_budget=1e9)

# one repeated unit each, and the elements it makes
SHAPES: dict[str, tuple[str, int]] = {
    "<p>text</p>": ("<p>some words of text</p>", 1),
    "<div>text</div>": ("<div>some words of text</div>", 1),
    "<div><p>sentence</p></div>": ("<div><p>Some sentence of text for the reader.</p></div>", 2),
    "<li>item</li>": ("<li>item of a list</li>", 1),
    "<tr><td>cell</td></tr>": ("<tr><td>cell words here</td></tr>", 2),
    "<a>link</a>": ("<a href='/x'>link</a> ", 1),
    "<b>x</b>": ("<b>x</b>", 1),
    "word<br>": ("word<br>", 1),
}
_WRAP = {"<li>item</li>": ("<ul>", "</ul>"), "<tr><td>cell</td></tr>": ("<table>", "</table>")}


def timed(html: str, limits: CleanLimits) -> tuple[float, str]:
    """CPU seconds of the clean stage on ``html`` (other processes on the machine do
    not count; the time budget counts wall time) and its outcome."""
    started = time.process_time()
    result = extract(html, limits=limits)
    outcome = result.reason if isinstance(result, Drop) else "article"
    return time.process_time() - started, outcome


def corpus_rows(root: Path) -> list[tuple[str, str, int, int, float, str]]:
    rows = []
    for name in ("aeb-dev", "traf-eval-dev"):
        for path in sorted((root / name / "html").glob("*.gz")):
            raw = gzip.decompress(path.read_bytes())
            html, _ = decode_html(raw, None)
            tree = parse(html)
            elements = int(tree.xpath("count(//*)")) if tree is not None else 0
            seconds, outcome = timed(html, CleanLimits())
            rows.append((name, path.name.split(".html")[0][:24], html.count("<"), elements,
                         seconds, outcome))  # fmt: skip
    return rows


def synthetic(name: str, elements: int) -> str:
    unit, per_unit = SHAPES[name]
    start, end = _WRAP.get(name, ("", ""))
    body = start + unit * ((elements - 6) // per_unit) + end  # html, head, title, body, ...
    return f"<html><head><title>t</title></head><body>{body}</body></html>"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path("/work/shared/corpus"))
    parser.add_argument("--top", type=int, default=5)
    args = parser.parse_args()
    limits = CleanLimits()
    print(f"bounds: {limits.max_elements} elements, {limits.max_tags} '<', "
          f"{limits.time_budget:g} s\n")  # fmt: skip
    rows = corpus_rows(args.corpus)
    cut = [r for r in rows if r[5] == "too_complex"]
    print(f"{len(rows)} corpus pages; cut by the bounds: {len(cut)}")
    for title, column in (("'<'", 2), ("elements", 3), ("clean CPU s", 4)):
        print(f"\nworst by {title}:\n| corpus | page | '<' | elements | clean CPU s | outcome |")
        print("|---|---|---|---|---|---|")
        for name, page, tags, elements, seconds, outcome in sorted(
            rows, key=lambda r: r[column], reverse=True
        )[: args.top]:
            print(f"| {name} | {page} | {tags} | {elements} | {seconds:.2f} | {outcome} |")
    print("\nsynthetic pages just under the element bound:")
    print("| shape | elements | clean CPU s (no time budget) | with the defaults |")
    print("|---|---|---|---|")
    for name in SHAPES:
        html = synthetic(name, limits.max_elements)
        tree = parse(html)
        elements = int(tree.xpath("count(//*)")) if tree is not None else 0
        seconds, _ = timed(html, UNBOUNDED)
        bounded, outcome = timed(html, limits)
        print(f"| `{name}` | {elements} | {seconds:.2f} | {outcome} in {bounded:.2f} s |")
    for count in (100_000,):
        html = "<html><body><p>" + "<b>x</b>" * count + "</p></body></html>"
        seconds, outcome = timed(html, limits)
        print(f"| `<b>x</b>` x {count} | {count + 3} | - | {outcome} in {seconds:.3f} s |")


if __name__ == "__main__":
    main()
