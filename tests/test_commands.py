"""The CLI's wiring: every subcommand has one handler, and no command module imports
the CLI back."""

from __future__ import annotations

import argparse

from newsq.workers.cli import build_parser
from newsq.workers.commands import COMMANDS
from tests.cli import imported_by


def test_every_subcommand_has_a_handler() -> None:
    parser = build_parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(sub.choices) == set(COMMANDS)


def test_command_modules_do_not_import_the_cli() -> None:
    loaded = imported_by("newsq.workers.commands", "newsq.workers.feeds_cmd",
                         "newsq.workers.report", "newsq.workers.stats")  # fmt: skip
    assert "newsq.workers.commands" in loaded
    assert "newsq.workers.cli" not in loaded
