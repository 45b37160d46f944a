"""The clean stage on pages its fast path gets wrong: a doubtful result gets trafilatura's
full extraction, readability never swaps the article for a fragment of it, a lead set
apart above the body is kept, a closing related-links heading is not, and the text
comes in one Unicode normal form.

Pages are built here, and the pages of the wide corpus's dev half that newsq once lost
are read from ``shared/corpus`` beside the repository when it is there
(``python -m bench.clean_wide`` measures the whole corpus).
"""

from __future__ import annotations

import unicodedata

import pytest
from lxml.html import fromstring

from newsq.clean import second_opinion
from newsq.clean.extract import extract
from newsq.clean.lead import find_lead, prose
from newsq.demo import clean_eval
from newsq.records import Article

SENTENCE = ("The council voted on Tuesday to close the old bridge for repairs, officials said "
            "after a long debate. ")  # fmt: skip
LEAD = ("The bridge that carried the town's traffic for ninety years closes next week. The "
        "council says repairs will take a year and cost twice what was planned.")  # fmt: skip


def _page(body: str, title: str = "Bridge closes for a year") -> str:
    return f"<html><head><title>{title}</title></head><body>{body}</body></html>"


def _article_paragraphs(n: int = 8) -> str:
    return "".join(f"<p>{SENTENCE * 2}Paragraph {i}.</p>" for i in range(n))


def _text(html: str) -> str:
    result = extract(html, "https://news.example/bridge")
    assert isinstance(result, Article), result
    return result.text


# pages of the wide corpus's dev half where newsq kept none of the article while
# trafilatura kept it (issue 17): the wrong block, a fragment, or too little
LOST_PAGES = (
    "acpjournals.org.3075.html", "handwerksblatt.de-Friseurbesuch.html",
    "laviedesidees.fr.evaluation.html", "rnz.de.witzel.html",
    "sportowefakty.wp.pl.falubaz.html", "ukbdnews.com.23646.html", "villacc.de.galaxy.html",
)  # fmt: skip


@pytest.fixture(scope="module")
def wide_pages() -> dict[str, clean_eval.Page]:
    try:
        folder = clean_eval.corpus_dir()
    except FileNotFoundError:
        pytest.skip("the wide corpus (shared/corpus/traf-eval-dev) is not beside the repository")
    return {page.file: page for page in clean_eval.load_pages(folder)}


@pytest.mark.parametrize("name", LOST_PAGES)
def test_pages_once_lost_keep_their_article(wide_pages: dict[str, clean_eval.Page],
                                            name: str) -> None:  # fmt: skip
    page = wide_pages[name]
    text = " ".join(clean_eval.newsq_text(page).split())
    found = [s for s in page.with_ if " ".join(s.split()) in text]
    assert found, f"none of {page.with_} in: {text[:300]}"


def test_doubt_and_its_remedy() -> None:
    tree = fromstring(_page(f"<div>{SENTENCE * 40}</div>"))
    assert second_opinion.doubt("A caption.", tree) == "short"
    assert second_opinion.doubt(SENTENCE * 10, tree) is None
    small = fromstring(_page("<p>Only this.</p>"))
    assert second_opinion.doubt("Only this.", small) is None  # a short page: short is right
    menu = "\n".join(["Home", "Region", "Sport", "Culture", "Weather", "Heidelberg",
                      "Mannheim", "Police report", "Photo galleries", "Contact"])  # fmt: skip
    assert second_opinion.menu_like(menu)
    assert second_opinion.doubt(menu, tree) == "menu"
    calendar = "\n".join(" | ".join(str(d) for d in range(w, w + 7)) for w in range(1, 29, 7))
    assert second_opinion.menu_like("| February 2020 |\n| Su | Mo | Tu |\n" + calendar * 2)
    article = "\n".join(SENTENCE * 2 for _ in range(10))
    assert not second_opinion.menu_like(article)
    assert second_opinion.better(menu, article, "menu")
    assert not second_opinion.better(menu, menu + "\nImprint", "menu")
    assert second_opinion.better("A caption.", article, "short")
    assert not second_opinion.better(article, "A caption.", "short")


def test_readability_never_swaps_the_article_for_a_fragment_of_it() -> None:
    ours = "\n".join(f"{SENTENCE}Line {i}." for i in range(40))
    fragment = "\n".join(f"{SENTENCE}Line {i}." for i in range(3))  # inside ours, 8 % of it
    assert second_opinion.choose(ours, fragment) is ours
    trimmed = "\n".join(f"{SENTENCE}Line {i}." for i in range(30))  # ours less furniture
    assert second_opinion.choose(ours, trimmed) == trimmed


def test_a_lead_set_apart_above_the_body_is_kept() -> None:
    html = _page(f"<h1>Bridge closes</h1><div class='article-lead'>{LEAD}</div>"
                 f"<article>{_article_paragraphs()}</article>")  # fmt: skip
    text = _text(html)
    assert text.startswith(LEAD + "\n")
    assert text.count("ninety years") == 1


def test_a_one_line_dek_and_a_header_lead_are_not_body_text() -> None:
    dek = "Repairs will take a year and cost twice what the council had planned for them"
    for above in (
        f"<p class='dek'>{dek}</p>",  # a subtitle: one line, no second sentence
        f"<header><h1>Bridge closes</h1><p class='summary'>{LEAD}</p></header>",
    ):
        heading = "" if "<header>" in above else "<h1>Bridge closes</h1>"
        text = _text(_page(f"{heading}{above}<article>{_article_paragraphs()}</article>"))
        assert text.startswith(SENTENCE.strip()), text[:100]
    assert prose(LEAD) and not prose(dek)


def test_find_lead_stops_at_the_body() -> None:
    body = _article_paragraphs()
    tree = fromstring(_page(f"<h1>Bridge closes</h1><article>{body}</article>"
                            f"<div class='teaser'>{LEAD}</div>"))  # fmt: skip
    text = "\n".join(f"{SENTENCE * 2}Paragraph {i}." for i in range(8))
    assert find_lead(tree, text) is None  # a teaser after the body is another story's


def test_a_closing_related_links_heading_is_dropped() -> None:
    for trailer in ("<p>Related Topics ------------------------------------------</p>",
                    "<h3>More from this section</h3>"):  # fmt: skip
        text = _text(_page(f"<h1>Bridge closes</h1><article>{_article_paragraphs()}"
                           f"{trailer}</article>"))  # fmt: skip
        assert text.rstrip().endswith("Paragraph 7."), text[-120:]
    # a closing sentence is the article's, whatever it looks like
    ending = "<p>Reporting by Jane Roe; editing by John Doe.</p>"
    text = _text(_page(f"<h1>Bridge closes</h1><article>{_article_paragraphs()}{ending}</article>"))
    assert text.rstrip().endswith("editing by John Doe.")


def test_text_is_in_one_unicode_normal_form() -> None:
    decomposed = "Cafe\u0301 re\u0301sume\u0301 and \u09af\u09bc"  # é as e + accent
    html = _page(
        f"<h1>Bridge closes</h1><article><p>{decomposed}.</p>{_article_paragraphs()}</article>"
    )
    text = _text(html)
    assert "Café résumé" in text
    assert unicodedata.is_normalized("NFC", text)
