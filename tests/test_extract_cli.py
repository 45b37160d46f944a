"""``newsq extract`` and ``newsq.extract`` on saved files: bytes decoded as the fetch
stage decodes them, and a file that cannot be read, unpacked or decoded is one line on
stderr while the other files go on."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

import newsq
from newsq import errors
from newsq.fetch.decoding import decode_html
from tests.cli import newsq_env, run_newsq

PARAGRAPHS = "".join(
    f"<p>“Quote number {i},” she said — and sentence {i} of the article follows here "
    "with more words to count.</p>"
    for i in range(8)
)


def _page(meta: str = "") -> bytes:
    """An article in windows-1252, whose curly quotes and dashes are not UTF-8."""
    html = (f"<html><head>{meta}<title>Quotes</title></head><body><article><h1>Quotes</h1>"
            f"{PARAGRAPHS}</article></body></html>")  # fmt: skip
    return html.encode("cp1252")


@pytest.mark.parametrize(
    "meta",
    ['<meta charset="iso-8859-1">', '<meta http-equiv="Content-Type" '
     'content="text/html; charset=latin1">', ""],
    ids=["iso-8859-1", "http-equiv-latin1", "no-charset"],
)  # fmt: skip
def test_extract_decodes_bytes_as_the_fetch_stage_does(meta: str) -> None:
    # WHATWG reads iso-8859-1 as windows-1252: the quotes a browser shows survive
    raw = _page(meta)
    article = newsq.extract(raw)
    assert isinstance(article, newsq.Article), article
    assert "“Quote number 0,” she said — and" in article.text
    assert "\ufffd" not in article.text
    assert article == newsq.extract(decode_html(raw, None)[0])


def test_extract_of_binary_junk_is_a_decode_error() -> None:
    junk = bytes(range(256)) * 16
    dropped = newsq.extract(junk)
    assert isinstance(dropped, newsq.Drop) and dropped.reason == errors.DECODE_ERROR


def test_each_bad_file_is_one_line_and_the_others_are_extracted(tmp_path: Path) -> None:
    (tmp_path / "a.html").write_bytes(_page('<meta charset="iso-8859-1">'))
    (tmp_path / "b.html.gz").write_bytes(gzip.compress(_page()))
    (tmp_path / "plain.gz").write_bytes(_page())  # named .gz, not gzip
    (tmp_path / "cut.gz").write_bytes(gzip.compress(_page() * 4)[:200])
    corrupt = bytearray(gzip.compress(_page() * 4))
    corrupt[30] ^= 0xFF
    (tmp_path / "corrupt.gz").write_bytes(bytes(corrupt))
    (tmp_path / "junk.html").write_bytes(bytes(range(256)) * 8)
    (tmp_path / "folder").mkdir()
    (tmp_path / "big.html").write_bytes(b"<p>" + b"x" * 5000 + b"</p>")
    (tmp_path / "bomb.gz").write_bytes(gzip.compress(b" " * 200_000))
    files = ["a.html", "plain.gz", "cut.gz", "corrupt.gz", "junk.html", "folder", "gone.html",
             "big.html", "bomb.gz", "b.html.gz"]  # fmt: skip
    done = run_newsq("extract", *files, env=newsq_env(NEWSQ_MAX_BYTES="4000"),
                     cwd=str(tmp_path), timeout=60)  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 1  # some files failed, the rest were extracted
    printed = [json.loads(line) for line in done.stdout.splitlines()]
    assert [p["path"] for p in printed] == ["a.html", "b.html.gz"]
    assert all("“Quote number 0,”" in p["text"] for p in printed)
    lines = done.stderr.splitlines()
    assert lines.pop(2).startswith("newsq: corrupt.gz: a corrupt gzip file (Error -3 ")
    assert lines == [
        "newsq: plain.gz: not a gzip file",
        "newsq: cut.gz: a truncated gzip file",
        "newsq: junk.html: decode_error: body is not text in any charset",
        "newsq: cannot read folder: Is a directory",
        "newsq: cannot read gone.html: No such file or directory",
        "newsq: big.html: over NEWSQ_MAX_BYTES (4000 bytes)",
        "newsq: bomb.gz: over NEWSQ_MAX_BYTES (4000 bytes)",
    ]  # fmt: skip


def test_extract_exits_2_when_no_file_could_be_read(tmp_path: Path) -> None:
    done = run_newsq("extract", "gone.html", "gone.gz", env=newsq_env(), cwd=str(tmp_path),
                     timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.splitlines()[0] == "newsq: cannot read gone.html: No such file or directory"


@pytest.mark.parametrize("url", ["::", "javascript:alert(1)", "http://a:99999/",
                                 "https://a.test/" + "a" * 2100])  # fmt: skip
def test_an_address_that_is_no_url_is_a_bad_argument(
    tmp_path: Path, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from newsq.workers.cli import main  # in this process: the subprocess tests above cost

    (tmp_path / "a.html").write_bytes(_page())
    assert main(["extract", str(tmp_path / "a.html"), "--url", url]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("newsq: --url: ") and len(err.splitlines()) == 1
