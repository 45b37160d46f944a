"""The clean rules' shortcuts give what the plain computations give (issue 7)."""

from __future__ import annotations

import re
import sys

import lxml.html
from lxml import etree

from newsq.clean.chunks import add_continuations
from newsq.clean.rules import Norms, block_text, norm

_SPACES = re.compile(r"\s+")


def test_block_text_collapses_every_regex_whitespace() -> None:
    # block_text splits where it used to substitute r"\s+": both know the same whitespace
    chars = [chr(c) for c in range(sys.maxunicode + 1)]
    assert [c for c in chars if _SPACES.fullmatch(c)] == [c for c in chars if c.isspace()]
    block = etree.fromstring("<p> a<b>b </b>c\u00a0\u2003d\u3000<i/>e\n\t</p>")
    block.find("i").tail = "e\u2028\u205ff\u0085 "
    raw = "".join(block.itertext())
    assert block_text(block) == _SPACES.sub(" ", raw).strip() == "ab c d e f"
    assert block_text(etree.fromstring("<p>\u2003only  text\n</p>")) == "only text"
    assert block_text(etree.fromstring("<p/>")) == ""


def test_norms_are_norm_computed_once() -> None:
    norms = Norms()
    assert norms["Hello,  World!"] == norm("Hello,  World!") == "hello world"
    norms["Hello,  World!"]
    assert len(norms) == 1


def test_norm_of_a_text_is_the_norms_of_its_lines_joined() -> None:
    # add_continuations keys the whole text from its lines' keys: lower() is context-free
    # across a line break (Greek final sigma) and no word runs over one
    text = "ΟΔΟΣ\nΣΑΣ Α\n\n  \nİstanbul — it's\nend_of-line"
    lines = [key for line in text.split("\n") if (key := norm(line))]
    assert " ".join(lines) == norm(text)


def _chunk(cls: str, start: int) -> str:
    words = " ".join(f"w{start}x{i}" for i in range(24))
    return f'<div class="{cls}">' + "".join(f"<p>{n} {words}</p>" for n in range(3)) + "</div>"


def test_continuation_chunks_found_near_ours_only() -> None:
    ours = "".join(f"<p>our line {n} has more than eight words in it</p>" for n in range(3))
    page = lxml.html.fromstring(
        "<html><body>"
        f'<div><div><div class="c">{ours}</div></div><div>{_chunk("c", 1)}</div></div>'
        f"<div><div><div>{_chunk('c', 2)}</div></div></div>"
        "</body></html>"
    )
    text = "\n".join(p.text_content() for p in page.iter("p"))
    text = "\n".join(line for line in text.split("\n") if line.startswith("our"))
    result = add_continuations(page, text).split("\n")
    assert result[:3] == text.split("\n")
    assert len(result) == 6 and all("w1x0" in line for line in result[3:])
