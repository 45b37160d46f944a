"""The sites file (``NEWSQ_SITES_FILE``), its clean-stage rules: blocks pruned, the body
taken from a named block, a bad file refused at start-up in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from newsq.api import extract
from newsq.clean.sites import load
from newsq.config.settings import Settings
from newsq.errors import ConfigError
from newsq.records import Article

STORY = "".join(
    f"<p>The council voted on Tuesday to close the old bridge for repairs, officials said "
    f"after a long debate in the town hall. Paragraph {i}.</p>"
    for i in range(8)
)
BOX = ("<div class='partner-box'><p>Our partners at the regional paper report that the "
       "ferry will run every hour while the bridge is closed, with more boats at weekends."
       "</p></div>")  # fmt: skip
OTHER = f"<div id='other'><p>{'Unrelated words here. ' * 30}</p></div>"
PAGE = (f"<html><head><title>Bridge</title></head><body><h1>Bridge</h1>"
        f"<article>{STORY}{BOX}</article>{OTHER}</body></html>")  # fmt: skip


def _rules(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "sites.toml"
    path.write_text(text, encoding="utf-8")
    load.cache_clear()  # a process reads its rules once; each test writes new ones
    return Settings.from_env({"NEWSQ_SITES_FILE": str(path)})


def _text(settings: Settings, url: str = "https://www.paper.example/a") -> str:
    result = extract(PAGE, url, settings=settings)
    assert isinstance(result, Article), result
    return result.text


def test_without_rules_the_box_is_taken_for_the_article(tmp_path: Path) -> None:
    assert "ferry will run" in _text(Settings.from_env({}))


def test_prune_removes_a_block_on_the_site_and_its_subdomains(tmp_path: Path) -> None:
    settings = _rules(tmp_path, '["*.paper.example"]\nprune = ["//div[@class=\'partner-box\']"]\n')
    for url in ("https://www.paper.example/a", "https://paper.example/a"):
        text = _text(settings, url)
        assert "ferry will run" not in text and "Paragraph 7." in text
    assert "ferry will run" in _text(settings, "https://other.example/a")  # not its site
    exact = _rules(tmp_path, '["paper.example"]\nprune = ["//div[@class=\'partner-box\']"]\n')
    assert "ferry will run" in _text(exact, "https://www.paper.example/a")  # a host is exact


def test_body_takes_the_article_from_the_named_block(tmp_path: Path) -> None:
    settings = _rules(tmp_path, '["www.paper.example"]\nbody = "//div[@id=\'other\']"\n')
    text = _text(settings)
    assert text.startswith("Unrelated words here.") and "Paragraph" not in text
    # a page without the block is extracted as usual
    settings = _rules(tmp_path, '["www.paper.example"]\nbody = "//div[@id=\'missing\']"\n')
    assert "Paragraph 7." in _text(settings)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('["a.example"]\nprune = ["//div[@class="]\n', "is not an XPath expression"),
        ('["a.example"]\nbody = 3\n', "must be a non-empty string"),
        ('["a.example"]\nskip = ["//p"]\n', "unknown key 'skip'"),
        ("not = [toml", "is not TOML"),
    ],
)
def test_a_bad_rules_file_is_one_line(tmp_path: Path, content: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _rules(tmp_path, content)


def test_newsq_refuses_a_missing_rules_file_at_start_up(tmp_path: Path) -> None:
    env = {"NEWSQ_SITES_FILE": str(tmp_path / "nope.toml"), "PATH": "/usr/bin:/bin"}
    page = tmp_path / "page.html"
    page.write_text(PAGE, encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "newsq", "extract", str(page)], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "NEWSQ_SITES_FILE: cannot read" in done.stderr
