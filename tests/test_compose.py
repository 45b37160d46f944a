"""docker-compose.yml: parsed, schema-checked, and its commands are real newsq commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from newsq.workers.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent


def test_compose_file_is_valid_and_runs_newsq_commands() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((ROOT / "tests" / "compose-spec.json").read_text())
    jsonschema.validate(compose, schema)
    services = compose["services"]
    assert {"redis", "postgres", "fetch-worker", "process-worker"} <= set(services)
    assert "--appendonly" in services["redis"]["command"]
    parser = build_parser()
    newsq_services = [s for s in services.values() if s.get("image", "").startswith("newsq")]
    assert len(newsq_services) >= 3
    for service in newsq_services:
        parser.parse_args(service["command"])  # exits (fails the test) on a bad command
