"""What `pip install .` installs: one import package, `newsq`, that runs beside a
project with its own `config/`, `tasks/` and `workers/` packages."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# where each installed package's code lives in the repository (pyproject's package-dir)
FOLDERS = {"newsq": ROOT / "newsq", "newsq.config": ROOT / "config",
           "newsq.tasks": ROOT / "tasks", "newsq.workers": ROOT / "workers"}  # fmt: skip


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A wheel of the working tree, built from a copy of its files (as a fresh clone
    would be: no build/ folder left over from an earlier layout)."""
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel")
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, text=True, check=True)  # fmt: skip
    for name in listed.stdout.splitlines():
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out),
                    str(src)], check=True, capture_output=True, timeout=300)  # fmt: skip
    (built,) = out.glob("newsq-*.whl")
    yield built


def _tree_packages() -> set[str]:
    found = set()
    for package, folder in FOLDERS.items():
        for init in folder.rglob("__init__.py"):
            rel = init.parent.relative_to(folder).parts
            found.add(".".join((package, *rel)))
    return found


def test_pyproject_lists_every_package_of_the_tree() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(setuptools["packages"]) == _tree_packages()
    mapped = {k: ROOT / v for k, v in setuptools["package-dir"].items()}
    assert mapped == FOLDERS


@pytest.mark.slow
def test_wheel_installs_one_top_level_package(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        assert zf.read(top_level).decode().split() == ["newsq"]
        (record,) = [n for n in names if n.endswith(".dist-info/RECORD")]
        paths = [line.split(",")[0] for line in zf.read(record).decode().splitlines()]
    tops = {p.split("/")[0] for p in paths}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"newsq"}
    for wanted in ("newsq/workers/cli.py", "newsq/tasks/fetch.py", "newsq/config/settings.py",
                   "newsq/dedup/dedup.lua", "newsq/fetch/politeness.lua", "newsq/ledger.lua",
                   "newsq/clean/boilerplate.lua", "newsq/store/migrations/script.py.mako",
                   "newsq/demo/data/aeb-dev/ground-truth.json"):  # fmt: skip
        assert wanted in paths, wanted


USER_PROJECT = {
    "config/__init__.py": "",
    "config/settings.py": "DEBUG = True  # a Django project's settings\n",
    "tasks/__init__.py": "OWN = 'tasks'\n",
    "workers/__init__.py": "OWN = 'workers'\n",
    "check.py": (
        "import sys\n"
        "import config.settings, tasks, workers\n"
        "from newsq.workers.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "assert config.settings.DEBUG and tasks.OWN == 'tasks' and workers.OWN == 'workers'\n"
        "raise SystemExit(code)\n"
    ),
}


@pytest.mark.slow
def test_newsq_runs_beside_a_project_with_its_own_config_and_tasks(
    wheel: Path, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site)]
    subprocess.run([*pip, str(wheel)], check=True, capture_output=True, timeout=300)
    project = tmp_path / "project"
    for name, text in USER_PROJECT.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSQ_")}
    # the project first on sys.path, as a Django project's folder is; then the wheel
    env["PYTHONPATH"] = os.pathsep.join([str(project), str(site)])
    done = subprocess.run([sys.executable, "check.py", "demo", "--workers", "1"], cwd=project,
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "stored" in done.stdout
    where = subprocess.run([sys.executable, "-c", "import newsq; print(newsq.__file__)"],
                           cwd=project, env=env, capture_output=True, text=True)  # fmt: skip
    assert where.stdout.startswith(str(site))  # the wheel's copy ran, not the checkout's


def test_readme_layout_table_is_the_tree() -> None:
    """Every stage package and top-level folder has its row in the README's code-layout
    table, and every path the table names exists."""
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("Code layout, stage by stage") : readme.index("## Delivery")]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    firsts = {line.split("|")[1].strip().split(",")[0].strip("` ") for line in rows}
    packages = {f"newsq/{p.parent.name}/" for p in (ROOT / "newsq").glob("*/__init__.py")}
    assert packages | {"config/", "tasks/", "workers/", "bench/", "tests/"} <= firsts
    for line in rows:
        first = line.split("|")[1].strip().split(",")[0].strip("` ")
        assert (ROOT / first).exists(), first


@pytest.mark.slow
def test_dependencies_resolve_with_the_pip_of_a_fresh_venv(wheel: Path, tmp_path: Path) -> None:
    """A fresh ``python -m venv`` has the pip its Python bundles (23.2 with 3.11), and
    ``pip install .`` must resolve with it, not only with an upgraded pip (pip 23.2
    crashed on readability-lxml's ``lxml[html-clean]`` beside justext's
    ``lxml[html_clean]``)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    done = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--dry-run",
                           "--quiet", str(wheel)], capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
