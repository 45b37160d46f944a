"""The edits a syndicated copy of a news story gets, for the sample news site.

Each edit is a pure function ``(Copy, Random) -> Copy`` that changes one thing the way
re-publishers do: a rewritten headline or lede, an editor's note, a dropped, merged or
moved paragraph, a wire credit, a trim to the first few paragraphs, other typography.
An edit that does not fit a copy (too few paragraphs) returns the copy unchanged, so
``Copy.edits`` lists only the edits that were applied.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Copy:
    """One published version of a story: headline, paragraphs, and the edits made."""

    headline: str
    paragraphs: tuple[str, ...]
    edits: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        return "\n".join(self.paragraphs)

    def edited(self, name: str, **changes: object) -> Copy:
        return replace(self, edits=(*self.edits, name), **changes)  # type: ignore[arg-type]


Edit = Callable[[Copy, random.Random], Copy]

_HEADLINE_WORDS = {
    "says": "tells",
    "said": "told",
    "new": "latest",
    "after": "following",
    "amid": "as",
    "plans": "moves",
    "big": "major",
    "over": "about",
    "will": "set to",
    "to": "set to",
    "and": "&",
    "for": "in",
}
_HEADLINE_PREFIXES = ("Report: ", "What to know: ", "Analysis: ", "Explainer: ", "Watch: ")
_LEDE_WORDS = {
    "said": "told reporters",
    "says": "told reporters",
    "announced": "said",
    "people": "residents",
    "about": "roughly",
    "also": "additionally",
    "but": "however,",
    "many": "numerous",
    "big": "major",
    "before": "prior to",
    "after": "following",
    "because": "since",
}
_LEDE_OPENERS = (
    "In a move that drew wide attention, ",
    "According to people familiar with the matter, ",
    "In the latest development, ",
)
_NOTES = (
    "UPDATE: This story has been updated with additional details.",
    "Editor's note: An earlier version of this story misstated a date. It has been corrected.",
    "This is a developing story and will be updated as more information becomes available.",
    "Correction: A previous version of this article misspelled a name.",
)
_CITIES = ("NEW YORK", "WASHINGTON", "LONDON", "SAN FRANCISCO", "CHICAGO", "LOS ANGELES")
_REPORTERS = ("Jane Miller", "Tom Okafor", "Priya Raman", "Lucas Brandt", "Ana Ferreira")


def _swap_words(text: str, table: dict[str, str], rng: random.Random, limit: int) -> str:
    """``text`` with up to ``limit`` words (chosen at random) replaced from ``table``."""
    spots = [m for m in re.finditer(r"\b\w+\b", text) if m.group().lower() in table]
    chosen = sorted(rng.sample(spots, min(limit, len(spots))), key=lambda m: m.start())
    out, last = [], 0
    for m in chosen:
        word = table[m.group().lower()]
        if m.group()[0].isupper():
            word = word[0].upper() + word[1:]
        out += [text[last : m.start()], word]
        last = m.end()
    return "".join([*out, text[last:]])


def _sentences(text: str) -> list[str]:
    return re.findall(r"\S.*?(?:[.!?][\"”’]?(?=\s+[\"“A-Z])|$)", text.strip())


# -- the edits -----------------------------------------------------------------------


def rewrite_headline(copy: Copy, rng: random.Random) -> Copy:
    """A different headline: a subtitle cut, words swapped, sentence case, a prefix."""
    headline = copy.headline
    for sep in (": ", " | ", " - ", " — "):
        if sep in headline and rng.random() < 0.5:
            headline = headline.split(sep)[0] if rng.random() < 0.5 else headline.split(sep)[-1]
            break
    headline = _swap_words(headline, _HEADLINE_WORDS, rng, 2)
    if headline == copy.headline or rng.random() < 0.3:
        words = headline.split()
        if sum(w[:1].isupper() for w in words) > len(words) / 2:  # Title Case -> Sentence
            headline = " ".join([words[0], *(w if w.isupper() else w.lower() for w in words[1:])])
        if headline == copy.headline or rng.random() < 0.4:
            headline = rng.choice(_HEADLINE_PREFIXES) + headline
    return copy.edited("rewrite_headline", headline=headline)


def rewrite_lede(copy: Copy, rng: random.Random) -> Copy:
    """The first paragraph reworded: words swapped, sentences swapped or an opener added."""
    if not copy.paragraphs:
        return copy
    lede = copy.paragraphs[0]
    new = _swap_words(lede, _LEDE_WORDS, rng, 3)
    sentences = _sentences(new)
    if len(sentences) >= 2 and rng.random() < 0.5:
        sentences[0], sentences[1] = sentences[1], sentences[0]
        new = " ".join(sentences)
    if new == lede or rng.random() < 0.3:
        new = rng.choice(_LEDE_OPENERS) + new[:1].lower() + new[1:]
    return copy.edited("rewrite_lede", paragraphs=(new, *copy.paragraphs[1:]))


def add_note(copy: Copy, rng: random.Random) -> Copy:
    """An editor's note or an "UPDATE:" line, at the top or the bottom."""
    note = rng.choice(_NOTES)
    paras = (note, *copy.paragraphs) if rng.random() < 0.4 else (*copy.paragraphs, note)
    return copy.edited("add_note", paragraphs=paras)


def drop_paragraph(copy: Copy, rng: random.Random) -> Copy:
    """One paragraph after the lede left out."""
    if len(copy.paragraphs) < 4:
        return copy
    i = rng.randrange(1, len(copy.paragraphs))
    return copy.edited("drop_paragraph", paragraphs=copy.paragraphs[:i] + copy.paragraphs[i + 1 :])


def merge_paragraphs(copy: Copy, rng: random.Random) -> Copy:
    """Two neighbouring paragraphs run together into one."""
    if len(copy.paragraphs) < 3:
        return copy
    i = rng.randrange(0, len(copy.paragraphs) - 1)
    merged = f"{copy.paragraphs[i]} {copy.paragraphs[i + 1]}"
    paras = (*copy.paragraphs[:i], merged, *copy.paragraphs[i + 2 :])
    return copy.edited("merge_paragraphs", paragraphs=paras)


def reorder_paragraphs(copy: Copy, rng: random.Random) -> Copy:
    """Two neighbouring paragraphs after the lede swapped."""
    if len(copy.paragraphs) < 4:
        return copy
    i = rng.randrange(1, len(copy.paragraphs) - 1)
    paras = list(copy.paragraphs)
    paras[i], paras[i + 1] = paras[i + 1], paras[i]
    return copy.edited("reorder_paragraphs", paragraphs=tuple(paras))


def wire_credit(copy: Copy, rng: random.Random) -> Copy:
    """A wire dateline on the lede, "CITY (AP) —" or "CITY (Reuters) -" with a credit line."""
    if not copy.paragraphs:
        return copy
    city = rng.choice(_CITIES)
    paras = list(copy.paragraphs)
    if rng.random() < 0.5:
        paras[0] = f"{city} (AP) — {paras[0]}"
    else:
        paras[0] = f"{city} (Reuters) - {paras[0]}"
        a, b = rng.sample(_REPORTERS, 2)
        paras.append(f"(Reporting by {a}; Editing by {b})")
    return copy.edited("wire_credit", paragraphs=tuple(paras))


def trim(copy: Copy, rng: random.Random) -> Copy:
    """Only the first paragraphs kept: the shortest lead holding 55–75% of the text."""
    if len(copy.paragraphs) < 5:
        return copy
    total = sum(len(p) for p in copy.paragraphs)
    goal, size = total * rng.uniform(0.55, 0.75), 0
    kept: list[str] = []
    for para in copy.paragraphs:
        if size >= goal and len(kept) >= 3:
            break
        kept.append(para)
        size += len(para)
    if len(kept) == len(copy.paragraphs):
        return copy
    return copy.edited("trim", paragraphs=tuple(kept))


_TO_CURLY = (('"', "“"), ("'", "’"), (" -- ", " — "), ("...", "…"))
_TO_STRAIGHT = (("“", '"'), ("”", '"'), ("’", "'"), ("‘", "'"), (" — ", " -- "), ("…", "..."))


def swap_typography(copy: Copy, rng: random.Random) -> Copy:
    """Curly quotes and dashes made straight, or straight ones made curly."""
    text = copy.text
    curly = sum(text.count(c) for c in "“”’—…")
    table = _TO_STRAIGHT if curly else _TO_CURLY
    paras = []
    for para in copy.paragraphs:
        for old, new in table:
            para = para.replace(old, new)
        if not curly:  # a quote before a space, a stop or the end closes
            para = re.sub(r"“(?=[\s,.;:!?)]|$)", "”", para)
        paras.append(para)
    if tuple(paras) == copy.paragraphs:
        return copy
    return copy.edited("swap_typography", paragraphs=tuple(paras))


BODY_EDITS: dict[str, Edit] = {
    "rewrite_lede": rewrite_lede,
    "add_note": add_note,
    "drop_paragraph": drop_paragraph,
    "merge_paragraphs": merge_paragraphs,
    "reorder_paragraphs": reorder_paragraphs,
    "wire_credit": wire_credit,
    "trim": trim,
    "swap_typography": swap_typography,
}
"""Every body edit, by name; ``syndicate`` picks among them."""


ALL_EDITS: tuple[str, ...] = ("rewrite_headline", *BODY_EDITS)
"""The names ``SiteSpec.edits`` may hold."""


def syndicate(original: Copy, rng: random.Random, allowed: Collection[str] = ALL_EDITS) -> Copy:
    """A syndicated copy of ``original``: usually a new headline, one to three body edits,
    all among ``allowed``.

    The body is never left as it was while ``rewrite_lede`` is allowed: if no chosen edit
    applied, the lede is reworded.
    """
    copy = original
    if rng.random() < 0.75 and "rewrite_headline" in allowed:
        copy = rewrite_headline(copy, rng)
    body = sorted(name for name in BODY_EDITS if name in allowed)
    names = rng.sample(body, rng.randint(1, min(3, len(body)))) if body else []
    if "trim" in names and "drop_paragraph" in names:  # both would cut too deep
        names.remove("drop_paragraph")
    for name in names:
        copy = BODY_EDITS[name](copy, rng)
    if copy.paragraphs == original.paragraphs and "rewrite_lede" in allowed:
        copy = rewrite_lede(copy, rng)
    return copy
