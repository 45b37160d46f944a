"""What a user reads: every flag has a help line and a README entry; no pointer to
files a user does not have; a User-Agent that names no one else's site."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

from newsq import __version__
from newsq.config.settings import Settings
from newsq.workers.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
# files of the project's design that a clone or an installed newsq does not carry
NOT_SHIPPED = re.compile(r"CONTRACT\.md|\.\./shared/")


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
              ) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:  # fmt: skip
    """Every (sub)command's parser, with its words (``("feeds", "add")``)."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


def _actions(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.Action]]:
    for path, command in _commands(parser):
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction):  # its choices' help lines
                for choice in action._choices_actions:
                    yield " ".join(("newsq", *path, choice.dest)), choice
            elif not isinstance(action, argparse._HelpAction):
                yield " ".join(("newsq", *path)), action


def test_every_flag_and_subcommand_has_a_help_line() -> None:
    missing = [f"{where} {a.option_strings or a.dest}" for where, a in _actions(build_parser())
               if not a.help or a.help == argparse.SUPPRESS]  # fmt: skip
    assert missing == [], missing


def test_help_texts_point_at_no_file_a_user_lacks() -> None:
    parser = build_parser()
    texts = [parser.description or "", *(a.help or "" for _, a in _actions(parser))]
    texts += [command.description or "" for _, command in _commands(parser)]
    assert [t for t in texts if NOT_SHIPPED.search(t)] == []


def test_readme_points_at_no_file_a_user_lacks() -> None:
    assert NOT_SHIPPED.findall(README) == []


def test_every_flag_is_in_the_readme_commands_table() -> None:
    """Each command's flags appear in its row of the README's "Commands" table."""
    section = README.split("\n## Commands", 1)[1].split("\n## ", 1)[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("| `newsq ")]
    missing = []
    for path, command in _commands(build_parser()):
        if not path or any(isinstance(a, argparse._SubParsersAction) for a in command._actions):
            continue
        words = " ".join(("newsq", *path))
        row = next((r for r in rows if re.search(rf"`{re.escape(words)}( |`)", r)), None)
        if row is None:  # `feeds add ...`, `feeds list ...`: one row for the group
            row = next((r for r in rows if f"`{' '.join(path)} " in r
                        and f"`newsq {path[0]} " in r), None)  # fmt: skip
        flags = [s for a in command._actions for s in a.option_strings[:1]
                 if s.startswith("--") and s != "--help"]  # fmt: skip
        missing += [f"{words} {flag}" for flag in flags if row is None or flag not in row]
    assert missing == [], missing


def test_default_user_agent_names_no_site_but_the_projects() -> None:
    """The default names newsq and its version; any URL in it is one the project gives."""
    project = (ROOT / "pyproject.toml").read_text()
    agent = Settings.from_env({}).user_agent
    assert agent.startswith(f"newsq/{__version__}")
    for url in re.findall(r"https?://[^\s)]+", agent):
        assert url in project, f"{url} is not one of pyproject's [project.urls]"
    assert "NEWSQ_USER_AGENT" in README and "contact" in README
