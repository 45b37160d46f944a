"""The sites file (``NEWSQ_SITES_FILE``): its clean-stage rules (blocks pruned, the body
taken from a named block), and each bad entry refused at start-up in one line naming the
file, the table and the key (its fetch keys at work: tests/test_sites_fetch.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from newsq.api import extract
from newsq.config.settings import Settings
from newsq.errors import ConfigError
from newsq.records import Article
from newsq.sites import KEYS, load

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


@pytest.mark.parametrize(
    ("entry", "key", "message"),
    [
        ("rate = 'fast'", "rate", "is not requests per second, 0 (no limit) to"),
        ("rate = -1", "rate", "is not requests per second"),
        ("rate = inf", "rate", "is not requests per second"),
        ("rate = true", "rate", "is not requests per second"),
        ("concurrency = 0", "concurrency", "is not a whole number of requests, 1 to"),
        ("concurrency = 1.5", "concurrency", "is not a whole number of requests"),
        ("user_agent = ''", "user_agent", "a non-empty string"),
        ("user_agent = 'newsq/1 \u00e9'", "user_agent", "must be printable ASCII"),
        ('user_agent = "newsq/1\\r\\nX: 1"', "user_agent", "must be printable ASCII"),
        ("headers = 'Cookie: a=b'", "headers", "a table of header names and values"),
        ("headers = { Host = 'other.example' }", "headers", "Host cannot be set here"),
        ("headers = { content-length = '0' }", "headers", "content-length cannot be set"),
        ("headers = { User-Agent = 'x/1' }", "headers", "(use user_agent)"),
        ("headers = { 'X Key' = '1' }", "headers", "'X Key' is not an HTTP header name"),
        ("headers = { Cookie = 'caf\u00e9' }", "headers Cookie", "must be printable ASCII"),
        ("headers = { Cookie = 3 }", "headers Cookie", "a non-empty string"),
        ("prune = '//div'", "prune", "a list of XPath expressions"),
        ("ratee = 1", ":", "unknown key 'ratee' (rate, concurrency, user_agent, headers, prune"),
    ],
)
def test_each_bad_entry_is_one_line_naming_file_table_and_key(
    tmp_path: Path, entry: str, key: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        _rules(tmp_path, f'["ok.example"]\nrate = 1\n\n["news.example"]\n{entry}\n')
    said = str(caught.value)
    where = f"NEWSQ_SITES_FILE {tmp_path / 'sites.toml'} [news.example]"
    assert said.startswith(where + (key if key == ":" else f" {key}: "))
    assert message in said and "\n" not in said


NOT_HOSTS = ["https://news.example/", "*.", "news.*.example", "a@b", "a.example:http",
             "a.example:70000", "a.example:", "news.example/x"]  # fmt: skip


@pytest.mark.parametrize("name", NOT_HOSTS)
def test_a_table_is_named_for_a_host(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match=r"a table is named for a host, `\*\.domain` or"):
        _rules(tmp_path, f'["{name}"]\nrate = 1\n')


def test_a_host_has_one_table_and_an_unquoted_host_is_explained(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[News.Example\.\]: the same host as \[news.example\]"):
        _rules(tmp_path, '["news.example"]\nrate = 1\n["News.Example."]\nrate = 2\n')
    with pytest.raises(ConfigError, match=r'\[www\]: unknown key .paper.: a host name with dots '
                       r'is quoted, \["www.paper..."\]'):  # fmt: skip
        _rules(tmp_path, "[www.paper.example]\nrate = 1\n")


def test_the_readmes_example_holds_every_key_and_loads(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Rules for the sites you care most about", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    _rules(tmp_path, example)
    site = load(str(tmp_path / "sites.toml")).for_url("https://news.example.com/a")
    assert site is not None and all(getattr(site, key) for key in KEYS), site


def test_newsq_refuses_a_missing_rules_file_at_start_up(tmp_path: Path) -> None:
    env = {"NEWSQ_SITES_FILE": str(tmp_path / "nope.toml"), "PATH": "/usr/bin:/bin"}
    page = tmp_path / "page.html"
    page.write_text(PAGE, encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "newsq", "extract", str(page)], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "NEWSQ_SITES_FILE: cannot read" in done.stderr


def test_newsq_refuses_a_bad_entry_at_start_up(tmp_path: Path) -> None:
    sites = tmp_path / "sites.toml"
    sites.write_text('["news.example"]\nheaders = { Host = "other.example" }\n')
    env = {"NEWSQ_SITES_FILE": str(sites), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "newsq", "fetch", "http://news.example/"],
                          env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0, done.stderr
    assert f"NEWSQ_SITES_FILE {sites} [news.example] headers: Host cannot be set" in done.stderr
