"""Realistic copies of real stories, for the dedup tests and benchmark.

The bundled gold texts (``newsq/demo/data/aeb-dev/ground-truth.json``) are real articles.
:func:`edited_copies` makes what syndication does to one: another headline, a
rewritten lede, a paragraph added, dropped or moved, a copy trimmed to its first
paragraphs, a wire credit line, an editor's note, typographic quotes, outlet
boilerplate. Different gold stories are the negatives.
"""

from __future__ import annotations

import json
import random
from importlib import resources

CREDIT = "The Associated Press contributed to this report."
DATELINE = "NEW YORK (Reuters) - "
NOTE = (
    "UPDATE: This story has been updated to include a response from the company "
    "and additional details about the timeline."
)
LOCAL = (
    "Local officials said they were monitoring the situation closely and would "
    "share more information with residents as it became available later this week, "
    "according to a statement released on Tuesday evening."
)
FOOTER = (
    "Copyright 2024 The Associated Press. All rights reserved. This material may not "
    "be published, broadcast, rewritten or redistributed.\n\nRead more: Sign up for "
    "our daily newsletter to get the top stories delivered to your inbox."
)
EDITS = (
    "headline",
    "lede",
    "added",
    "dropped",
    "reordered",
    "trimmed",
    "credit",
    "note",
    "quotes",
    "footer",
    "combo",
)


def gold_texts() -> list[tuple[str, str]]:
    """(url, text) of every gold article with at least 40 words."""
    path = resources.files("newsq.demo") / "data" / "aeb-dev" / "ground-truth.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    out = []
    for item in data.values():
        text = item["articleBody"].strip()
        if len(text.split()) >= 40:
            out.append((item["url"], text))
    return out


def _paras(text: str) -> list[str]:
    return [p.strip() for p in text.split("\n") if p.strip()]


def _rewrite(paragraph: str, rng: random.Random) -> str:
    """A paraphrase stand-in: about a third of the words dropped or replaced."""
    fillers = ["reportedly", "officials", "on Monday", "said", "new", "the latest"]
    out = []
    for word in paragraph.split():
        roll = rng.random()
        if roll < 0.15:
            continue
        out.append(rng.choice(fillers) if roll < 0.3 else word)
    return " ".join(out)


def _curly(text: str) -> str:
    out, open_quote = [], True
    for ch in text:
        if ch == '"':
            out.append("\u201c" if open_quote else "\u201d")
            open_quote = not open_quote
        else:
            out.append({"'": "\u2019", "-": "\u2014"}.get(ch, ch))
    return "".join(out)


def edit(text: str, kind: str, rng: random.Random) -> tuple[str, str | None]:
    """(text, headline) of one edited copy of ``text``; ``kind`` is one of EDITS."""
    ps = _paras(text)
    mid = len(ps) // 2
    if kind == "headline":
        return text, f"Breaking: {rng.randint(1, 99)} things to know"
    if kind == "lede":
        ps[0] = _rewrite(ps[0], rng)
    elif kind == "added":
        ps.insert(max(mid, 1), LOCAL)
    elif kind == "dropped" and len(ps) > 2:
        del ps[rng.randrange(1, len(ps))]
    elif kind == "reordered" and len(ps) > 2:
        i = rng.randrange(1, len(ps) - 1)
        ps[i], ps[i + 1] = ps[i + 1], ps[i]
    elif kind == "trimmed":
        ps = ps[:3]
    elif kind == "credit":
        ps[0] = DATELINE + ps[0]
        ps.append(CREDIT)
    elif kind == "note":
        ps.insert(0, NOTE)
    elif kind == "quotes":
        return _curly(
            text.replace("\u2019", "'").replace("\u201c", '"').replace("\u201d", '"')
        ), None
    elif kind == "footer":
        ps.append(FOOTER)
    elif kind == "combo":
        if len(ps) > 3:
            del ps[rng.randrange(1, len(ps))]
        ps[0] = DATELINE + ps[0]
        ps.append(CREDIT)
        return _curly("\n\n".join(ps)), None
    return "\n\n".join(ps), None


def edited_copies(text: str, rng: random.Random) -> list[tuple[str, str, str | None]]:
    """(edit kind, text, headline) for every kind in EDITS."""
    return [(kind, *edit(text, kind, rng)) for kind in EDITS]
