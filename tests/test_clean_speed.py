"""The clean rules' shortcuts give what the plain computations give (issue 7)."""

from __future__ import annotations

import gzip
import json
import re
import sys
from importlib import resources

import lxml.html
import pytest
import trafilatura
from lxml import etree
from trafilatura import xpaths

from newsq.clean import fast
from newsq.clean.chunks import add_continuations
from newsq.clean.extract import parse
from newsq.clean.rules import APPEAL, Norms, _may_appeal, block_text, norm

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


CORPUS = resources.files("newsq.demo") / "data" / "aeb-dev"


def _corpus_pages() -> list[tuple[str, str]]:
    """(html, url) of the article benchmark's 121 dev pages."""
    truth = json.loads((CORPUS / "ground-truth.json").read_text("utf-8"))
    return [
        (gzip.decompress((CORPUS / "html" / f"{key}.html.gz").read_bytes()).decode(), item["url"])
        for key, item in sorted(truth.items())
    ]


EDGE_PAGE = """<html><body><h1>Title</h1>
<div id="comments"><p>a</p></div><div id="commentary"><p>kept</p></div>
<ol class="comment-list"><li>b</li></ol><ul id="disqus_thread"><li>kept</li></ul>
<ol id="comment-3"><li>c</li></ol><details class="post-comments">d</details>
<section class="x infinite-scroll"><h1>kept</h1></section><div id="infinitescroll">e</div>
<aside class="mvp-post-add-box"><h1>f</h1><div class="mvp-post-add-wrap">g</div></aside>
<div class="a elementor-share-buttons">h</div><span class="elementor-share-buttons">kept</span>
<div class="Comment-body">i</div><div id="xcomments">kept</div>
</body></html>"""


def test_fast_prunes_find_what_trafilaturas_xpaths_find() -> None:
    # the tag-filtered walks stand in for trafilatura's XPath: the same elements, in order
    pairs = [
        (fast.RAW_TREE_PRUNE, xpaths.RAW_TREE_PRUNE_XPATH),
        (fast.COMMENTS_AND_LISTS, xpaths.REMOVE_COMMENTS_AND_LISTS_XPATH),
    ]
    edge = parse(EDGE_PAGE)
    assert edge is not None
    found = [el for selector in fast.RAW_TREE_PRUNE + fast.COMMENTS_AND_LISTS
             for el in selector(edge)]  # fmt: skip
    assert not any("kept" in el.text_content() for el in found) and len(found) == 9
    for html, _ in [(EDGE_PAGE, None), *_corpus_pages()]:
        tree = parse(html)
        assert tree is not None
        for selectors, expressions in pairs:
            assert len(selectors) == len(expressions)
            for select, expression in zip(selectors, expressions, strict=True):
                assert select(tree) == expression(tree)


def test_fast_body_is_bare_extractions_body() -> None:
    for html, url in [(EDGE_PAGE, None), *_corpus_pages()]:
        tree = parse(html)
        assert tree is not None
        before = etree.tostring(tree)
        ours = fast.fast_body(tree, url)
        assert etree.tostring(tree) == before  # our tree is left as it was
        document = trafilatura.bare_extraction(
            tree, url=url, fast=True, favor_recall=True, include_comments=False,
            include_tables=True, with_metadata=False,
        )  # fmt: skip
        theirs = getattr(document, "body", None)
        assert (ours is None) == (theirs is None)
        if ours is not None:
            assert etree.tostring(ours) == etree.tostring(theirs)


@pytest.mark.parametrize(
    "line",
    [
        "Sign up for our free daily newsletter",
        "Subscribe to our YouTube channel",
        "Join our free WhatsApp channel for the latest updates",
        "If you enjoyed this article, please share it",
        "Support independent journalism today",
        "Get the NewsNow app",
        "Download our apps for iOS and Android",
        "Subscribers get full story access: log in",
        "Submit your letter to the editor",
        "Want to stay informed? Sign up",
        "Do you want to be informed first?",
        "Follow us on Instagram for more",
        "Abonnez-vous à notre lettre",
        "Únete a nuestro canal de Telegram",
        "This post contains affiliate links",
        "İf you enjoyed this story, share it",  # "İ" is "i" to IGNORECASE, not to lower()
        "Support our journalısm",  # dotless "ı" is "i" to IGNORECASE
        "ſign up for the latest alerts",
    ],
)
def test_appeal_words_never_hide_an_appeal(line: str) -> None:
    assert APPEAL.search(line), line
    assert _may_appeal(line)


def test_appeal_words_let_plain_lines_skip_the_regex() -> None:
    assert not _may_appeal("The minister said the happy outcome was expected, follow-up due")
