"""docker-compose.yml, the Dockerfile and the README's compose lines, checked without a
Docker engine.

The file is checked against the Compose schema; each newsq service's command line, as its
container would run it (entrypoint + command), is run for real with ``--help`` and parsed
by newsq's own parser; every ``docker compose`` line of the README and of the file's
comments names services that exist and gives them arguments their command accepts; the
workers' healthcheck runs against a live worker; and the image's install is run from
exactly what the Dockerfile's COPY lines take from a context the .dockerignore filters.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import posixpath
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from newsq.workers.cli import build_parser
from tests.processes import running

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
README = (ROOT / "README.md").read_text()
IMAGE = "newsq:latest"


@cache
def _compose() -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)  # resolves the `<<:` merges
    return compose


def _services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = _compose()["services"]
    return services


def _newsq_services() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in _services().items() if s.get("image") == IMAGE}


# -- the Dockerfile --------------------------------------------------------------------


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    steps, pending = [], ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, args = pending.strip().partition(" ")
        steps.append((keyword.upper(), args.strip()))
        pending = ""
    return steps


def _image_exec_form(keyword: str) -> list[str]:
    (args,) = [a for k, a in _dockerfile() if k == keyword]
    form: list[str] = json.loads(args)  # exec form: no shell between Docker and newsq
    return form


def container_argv(service: dict[str, Any], run_args: list[str] | None = None) -> list[str]:
    """What the service's container runs: Compose's ``entrypoint`` replaces the image's and
    drops the image's CMD; ``command`` (or ``docker compose run``'s arguments) replaces
    the CMD."""
    if "entrypoint" in service:
        entrypoint, default = service["entrypoint"], []
    else:
        entrypoint, default = _image_exec_form("ENTRYPOINT"), _image_exec_form("CMD")
    command = service.get("command", default) if run_args is None else run_args
    assert isinstance(entrypoint, list) and isinstance(command, list)  # no shell splitting
    return [*entrypoint, *command]


# -- newsq's parser --------------------------------------------------------------------


def parse_error(args: list[str]) -> str | None:
    """newsq's parser's complaint about ``newsq ARGS`` (its last line), None if it parses."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(args)
    except SystemExit as exc:
        if exc.code:
            return (err.getvalue().strip().splitlines() or [f"exit {exc.code}"])[-1]
    return None


# -- docker compose's command line (the part the README uses) --------------------------

GLOBAL_VALUED = {"--profile", "-f", "--file", "-p", "--project-name"}
# per subcommand: its flags, and its options that take a value; a line using anything
# else fails here (check `docker compose SUB --help` and add it)
SUBCOMMANDS: dict[str, tuple[set[str], set[str]]] = {
    "up": ({"-d", "--detach", "--build", "--no-build", "--wait", "--remove-orphans"},
           {"--scale"}),
    "run": ({"--rm", "-T", "-d", "--detach", "--no-deps", "--build", "-i"},
            {"-e", "--env", "-v", "--volume", "--name"}),
    "exec": ({"-T", "-d", "--detach"}, {"-e", "--env", "-u", "--user"}),
    "logs": ({"-f", "--follow", "-t", "--timestamps"}, {"--tail"}),
    "ps": ({"-a", "--all", "-q", "--quiet"}, set()),
    "build": ({"--pull", "--no-cache"}, set()),
    "down": ({"-v", "--volumes", "--remove-orphans"}, set()),
    "stop": (set(), {"-t", "--timeout"}),
    "restart": (set(), {"-t", "--timeout"}),
    "pull": (set(), set()),
}  # fmt: skip
TAKES_COMMAND = {"run", "exec"}  # options end at the service; the rest is its command


Options = list[tuple[str, str]]


def _options(words: list[str], flags: set[str], valued: set[str],
             stop_at_positional: bool) -> tuple[Options, list[str], list[str]]:  # fmt: skip
    """Split ``words`` into (option, value) pairs, positionals and problems."""
    options, positionals, problems = [], [], []
    rest = list(words)
    while rest:
        word = rest.pop(0)
        if not word.startswith("-") or word == "-":
            positionals.append(word)
            if stop_at_positional:
                positionals += rest
                break
            continue
        name, eq, value = word.partition("=")
        if name in valued:
            if not eq:
                if not rest:
                    problems.append(f"{name} needs a value")
                    break
                value = rest.pop(0)
            options.append((name, value))
        elif name in flags and not eq:
            options.append((name, ""))
        else:
            problems.append(f"unknown option {word}")
    return options, positionals, problems


def compose_line_problems(line: str, compose: dict[str, Any]) -> list[str]:
    """What is wrong with a ``docker compose ...`` line against ``compose`` (a loaded file)."""
    words = shlex.split(line, comments=True)
    for i, word in enumerate(words):  # the shell's redirections and pipes are not arguments
        if word in {"<", ">", "|", "&&", ";"}:
            words = words[:i]
            break
    assert words[:2] == ["docker", "compose"], line
    services = compose["services"]
    known_profiles = {p for s in services.values() for p in s.get("profiles", [])}
    rest, problems = words[2:], []
    while rest and rest[0].startswith("-"):  # global options, before the subcommand
        name, eq, value = rest.pop(0).partition("=")
        if name not in GLOBAL_VALUED or (not eq and not rest):
            return [f"unknown or incomplete option {name}"]
        value = value if eq else rest.pop(0)
        if name == "--profile" and value not in known_profiles:
            problems.append(f"no service has the profile {value!r}")
    if not rest or rest[0] not in SUBCOMMANDS:
        return [*problems, f"subcommand {rest[:1]} not known to this check"]
    sub = rest.pop(0)
    flags, valued = SUBCOMMANDS[sub]
    options, positionals, found = _options(rest, flags, valued, sub in TAKES_COMMAND)
    problems += found
    for name, value in options:
        if name == "--scale":
            service, _, count = value.partition("=")
            if service not in services or not count.isdigit():
                problems.append(f"--scale {value}: no such service or not a count")
    if sub not in TAKES_COMMAND:
        problems += [f"no service {name!r}" for name in positionals if name not in services]
        return problems
    if not positionals:
        return [*problems, f"{sub} needs a service"]
    name, args = positionals[0], positionals[1:]
    if name not in services:
        return [*problems, f"no service {name!r}"]
    argv = container_argv(services[name], args or None) if sub == "run" else args
    if argv[:1] == ["newsq"] and (error := parse_error(argv[1:])):
        problems.append(f"the container runs {shlex.join(argv)}: {error}")
    return problems


def _sh_lines(text: str) -> list[str]:
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        lines += [ln.strip() for ln in block.splitlines() if ln.strip()]
    return lines


def readme_compose_lines() -> list[str]:
    """Every `docker compose` command of the README (its sh blocks and inline code) and of
    the compose file's own comments."""
    lines = [ln for ln in _sh_lines(README) if ln.startswith("docker compose")]
    lines += re.findall(r"`(docker compose [^`]+)`", README)
    lines += re.findall(r"^#\s+(docker compose .+?)\s*$", COMPOSE_TEXT, re.M)
    lines += re.findall(r"\((docker compose [^)]+)\)", COMPOSE_TEXT)
    return lines


# -- the file itself -------------------------------------------------------------------


def test_compose_file_is_valid_and_runs_newsq_commands() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((ROOT / "tests" / "compose-spec.json").read_text())
    jsonschema.validate(_compose(), schema)
    services = _services()
    assert {"redis", "postgres", "fetch-worker", "process-worker", "beat"} <= set(services)
    assert "--appendonly" in services["redis"]["command"]
    assert len(_newsq_services()) >= 5
    for name, service in _newsq_services().items():
        # with only `image:`, some Compose versions try to pull newsq:latest from a registry
        assert service.get("build") == ".", name
        argv = container_argv(service)
        assert argv[0] == "newsq", name
        assert parse_error(argv[1:]) is None, (name, argv, parse_error(argv[1:]))


def test_each_service_command_line_runs_as_newsq_help() -> None:
    """The full argv each container runs, with --help appended, is a real newsq command
    line: the subcommand exists and its module imports (exit 0, its usage printed)."""
    for name, service in _newsq_services().items():
        argv = container_argv(service)
        done = subprocess.run([sys.executable, "-m", "newsq", *argv[1:], "--help"],
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, (name, argv, done.stderr[-2000:])
        words = [w for w in argv[1:3] if not w.startswith("-")]
        assert done.stdout.startswith(f"usage: newsq {' '.join(words)}".rstrip()), (name, argv)


def test_one_beat_and_every_long_running_newsq_service_has_a_healthcheck() -> None:
    services = _newsq_services()
    beats = [n for n, s in services.items()
             if container_argv(s)[1:2] == ["beat"] or "--beat" in container_argv(s)]  # fmt: skip
    assert len(beats) == 1  # feed polls and stuck-URL re-queues tick only with a beat
    assert "profiles" not in services[beats[0]]  # started by a plain `docker compose up`
    workers = [n for n, s in services.items() if container_argv(s)[1:2] == ["worker"]]
    assert workers
    for name in workers:
        assert "profiles" not in services[name]
        assert services[name]["healthcheck"]["test"][0] == "CMD-SHELL", name
    for name in ("redis", "postgres"):
        assert _services()[name]["healthcheck"]["test"], name


def test_tool_services_take_the_runs_arguments_as_flags() -> None:
    """`docker compose run --rm enqueue --feed URL` runs `newsq enqueue --feed URL`: the
    run's arguments replace the command, so the subcommand is in the entrypoint."""
    services = _newsq_services()
    tools = {n: s for n, s in services.items() if "tools" in s.get("profiles", [])}
    assert {"enqueue", "stats", "newsq"} <= set(tools)
    url = "https://example.com/rss.xml"
    assert container_argv(tools["enqueue"], ["--feed", url]) == ["newsq", "enqueue", "--feed", url]
    assert container_argv(tools["stats"], ["--once"]) == ["newsq", "stats", "--once"]
    assert container_argv(tools["newsq"], ["feeds", "list"]) == ["newsq", "feeds", "list"]


# -- the README's compose lines --------------------------------------------------------


def test_every_docker_compose_line_of_the_readme_is_valid_against_the_file() -> None:
    lines = readme_compose_lines()
    assert any(" run --rm enqueue --feed " in line for line in lines)
    assert any("--scale fetch-worker=" in line for line in lines)
    assert any("flower" in line for line in lines)
    for line in lines:
        assert compose_line_problems(line, _compose()) == [], line


def test_the_check_catches_a_run_that_replaces_the_newsq_subcommand() -> None:
    """The enqueue service as it was (no entrypoint, `enqueue` in its command): the run's
    arguments replaced the command, so the container ran `newsq --feed URL`."""
    old = {"image": IMAGE, "build": ".", "command": ["enqueue", "--feed", "https://a.example/rss"]}
    was = {"services": {"enqueue": old}}
    line = "docker compose run --rm enqueue --feed https://example.com/rss.xml"
    (problem,) = compose_line_problems(line, was)
    assert problem.startswith("the container runs newsq --feed https://example.com/rss.xml: ")
    assert compose_line_problems(line, _compose()) == []
    assert compose_line_problems("docker compose up -d --scale fetcher=4", _compose())
    assert compose_line_problems("docker compose run --rm stats --onse", _compose())
    assert compose_line_problems("docker compose --profile tool up -d flower", _compose())
    assert compose_line_problems("docker compose up --detatch", _compose())


# -- the workers' healthcheck, on a live worker ----------------------------------------


def _shell_test(healthcheck: dict[str, Any]) -> str:
    """The healthcheck's shell line as the container's shell gets it: Compose turns `$$`
    into `$`, and would fill any other `$NAME` from the host's environment."""
    kind, command = healthcheck["test"]
    assert kind == "CMD-SHELL"
    assert "$" not in command.replace("$$", ""), "a single $ is interpolated by Compose"
    return str(command.replace("$$", "$"))


@pytest.mark.slow
def test_worker_healthcheck_answers_for_its_own_worker_only(
    redis_url: str, key_prefix: str, sqlite_url: str, tmp_path: Path
) -> None:
    from newsq.config.celery import make_app
    from newsq.config.settings import Settings

    services = _newsq_services()
    checks = {_shell_test(s["healthcheck"]) for s in services.values()
              if container_argv(s)[1:2] == ["worker"]}  # fmt: skip
    (check,) = checks  # the workers share one check; a second one would need its own run
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSQ_")}
    env.update(services["fetch-worker"]["environment"])
    env.pop("NEWSQ_METRICS_PORT")  # 9100 may be taken on a test machine
    env.update({"NEWSQ_BROKER_URL": redis_url, "NEWSQ_DATABASE_URL": sqlite_url,
                "NEWSQ_KEY_PREFIX": key_prefix, "HOSTNAME": socket.gethostname(),
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"})  # fmt: skip
    app = make_app(Settings.from_env({"NEWSQ_BROKER_URL": redis_url,
                                      "NEWSQ_KEY_PREFIX": key_prefix}))  # fmt: skip
    argv = container_argv(services["fetch-worker"])
    log = tmp_path / "worker.log"
    with running([sys.executable, "-m", "newsq", *argv[1:]], env, log, tmp_path) as proc:
        deadline = time.monotonic() + 60
        while not app.control.inspect(timeout=1.0).ping():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
        healthy = subprocess.run(["/bin/sh", "-c", check], env=env, capture_output=True,
                                 text=True, timeout=60)  # fmt: skip
        assert healthy.returncode == 0, healthy.stderr[-2000:]
        elsewhere = subprocess.run(["/bin/sh", "-c", check], env={**env, "HOSTNAME": "other"},
                                   capture_output=True, timeout=60)  # fmt: skip
        assert elsewhere.returncode != 0  # another container's worker does not count
    after = subprocess.run(["/bin/sh", "-c", check], env=env, capture_output=True, timeout=60)
    assert after.returncode != 0  # the worker gone: unhealthy


# -- the image: its build context and its install --------------------------------------


def _ignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """.dockerignore as Docker reads it: paths from the context root, `*` within one path
    part, `**` across parts, a pattern matching a folder takes all inside it, `!`
    re-includes, the last matching line wins."""
    patterns = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        line = posixpath.normpath(line.lstrip("!").strip().lstrip("/"))
        regex = ""
        for part in re.split(r"(\*\*/|\*\*|\*|\?|\[[^]]*\])", line):
            if part == "**/":
                regex += "(?:.*/)?"
            elif part == "**":
                regex += ".*"
            elif part == "*":
                regex += "[^/]*"
            elif part == "?":
                regex += "[^/]"
            elif part.startswith("[") and part.endswith("]") and len(part) > 2:
                regex += part
            else:
                regex += re.escape(part)
        patterns.append((keep, re.compile(f"{regex}(?:/.*)?")))
    return patterns


def ignored(path: str) -> bool:
    verdict = False
    for keep, pattern in _ignore_patterns():
        if pattern.fullmatch(path):
            verdict = not keep
    return verdict


def test_dockerignore_keeps_what_git_ignores_out_of_the_build_context() -> None:
    for path in (".venv/bin/python", ".git/HEAD", "build/lib/newsq/cli.py",
                 "newsq.egg-info/PKG-INFO", "newsq/__pycache__/api.cpython-311.pyc",
                 "newsq.db", "data/newsq.db-wal", "newsq.db.redis/appendonlydir/x.aof",
                 "bench/out/run.json", ".mypy_cache/3.11/x.json"):  # fmt: skip
        assert ignored(path), path
    for path in ("Dockerfile", "pyproject.toml", "newsq/api.py", "newsq/ledger.lua",
                 "newsq/demo/data/aeb-dev/ground-truth.json", "workers/cli.py"):  # fmt: skip
        assert not ignored(path), path
    listed = subprocess.run(["git", "ls-files", "--others", "--ignored", "--exclude-standard",
                             "--directory"], cwd=ROOT, capture_output=True, text=True,
                            check=True)  # fmt: skip
    for path in listed.stdout.splitlines():  # what this checkout has that git ignores
        assert ignored(path.rstrip("/")), path


def _context(dest: Path) -> None:
    """The build context of a fresh clone: the files git has, less .dockerignore's."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, text=True, check=True)  # fmt: skip
    for name in listed.stdout.splitlines():
        if (ROOT / name).is_file() and not ignored(name):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)


@pytest.mark.slow
def test_image_install_from_what_the_dockerfile_copies(tmp_path: Path) -> None:
    """The Dockerfile's COPY lines run on the filtered context into its WORKDIR, then its
    `pip install --no-deps .` (into a folder of its own): the newsq it installs runs,
    from that folder, with every module and data file of the package."""
    context, site = tmp_path / "context", tmp_path / "site"
    _context(context)
    workdir: Path | None = None
    installs = []
    for keyword, args in _dockerfile():
        if keyword == "WORKDIR":
            workdir = tmp_path / args.lstrip("/")
            workdir.mkdir(parents=True, exist_ok=True)
        elif keyword == "COPY":
            assert workdir and not args.startswith("--"), args
            *sources, target = shlex.split(args)
            into = workdir / target
            for source in sources:
                assert (context / source).exists(), f"COPY {source}: not in the build context"
                if (context / source).is_dir():
                    shutil.copytree(context / source, into, dirs_exist_ok=True)
                else:
                    into.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(context / source, into / source)
        elif keyword == "RUN":
            commands = [cmd.split() for cmd in args.split("&&")]
            installs += [cmd for cmd in commands if cmd[:2] == ["pip", "install"]]
    assert workdir
    (deps,) = [cmd for cmd in installs if "-r" in cmd]
    assert (workdir / deps[deps.index("-r") + 1]).is_file()  # the lock, copied before it
    (own,) = [cmd for cmd in installs if "-r" not in cmd]
    assert own == ["pip", "install", "--no-deps", "."]
    done = subprocess.run([sys.executable, "-m", *own, "--quiet", "--target", str(site)],
                          cwd=workdir, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSQ_")}
    env["PYTHONPATH"] = str(site)
    entrypoint, cmd = _image_exec_form("ENTRYPOINT"), _image_exec_form("CMD")
    assert entrypoint == ["newsq"]
    code = "import newsq.workers.cli as cli; print(cli.__file__)"
    where = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                           capture_output=True, text=True)  # fmt: skip
    assert where.stdout.startswith(str(site)), where.stderr  # the installed copy, not the checkout
    helped = subprocess.run([sys.executable, "-m", "newsq", *cmd, "--help"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert helped.returncode == 0, helped.stderr[-2000:]
    folders = {"newsq": "newsq", "config": "newsq/config", "tasks": "newsq/tasks",
               "workers": "newsq/workers"}  # pyproject.toml's package-dir  # fmt: skip
    missing = []
    for folder, package in folders.items():
        for path in (context / folder).rglob("*"):
            data = path.suffix in {".py", ".lua", ".mako"} or "demo/data" in path.as_posix()
            installed = site / package / path.relative_to(context / folder)
            if path.is_file() and data and not installed.is_file():
                missing.append(str(path.relative_to(context)))
    assert missing == []
