"""The package as a user gets it: a wheel that carries its data, and modules layered without cycles."""

import ast
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import NAMES_BY_DECADE, NAMES_TXT

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "wavenet_names"


@pytest.mark.slow  # builds and installs a wheel, and starts the program
def test_an_installed_wheel_carries_names_txt_and_trains_on_it_from_any_directory(tmp_path):
    """`pip install .` or `pip install git+...` (not editable): the wheel ships data/names.txt (and
    names-by-decade.tsv), the shipped models and serve's page; `sample` before any training reads
    the shipped model, and `wavenet-names train` with no --data finds the data, wherever it is run from."""
    source = tmp_path / "source"  # a clean copy: no build/ left by an earlier build can slip files in
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".*", "build", "*.egg-info", "out", "__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(source)],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    (wheel,) = (tmp_path / "dist").glob("wavenet_names-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read("wavenet_names/datasets/names.txt") == NAMES_TXT.read_bytes()
        assert archive.read("wavenet_names/datasets/names-by-decade.tsv") == NAMES_BY_DECADE.read_bytes()
        for shipped in ("trained/names.pt", "trained/names-by-decade.pt", "trained/trained.json", "page.html"):
            assert archive.read(f"wavenet_names/{shipped}") == (PACKAGE / shipped).read_bytes()
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, capture_output=True)

    elsewhere = tmp_path / "elsewhere"  # no data/ here, and not the repository
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    first = [sys.executable, "-m", "wavenet_names", "sample", "-n", "3", "--seed", "0"]  # before any train
    result = subprocess.run(first, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and len(result.stdout.splitlines()) == 3, result.stderr
    tiny = ["--steps", "2", "--eval-every", "1", "--n-embd", "4", "--n-hidden", "8", "--samples", "0"]
    result = subprocess.run(
        [sys.executable, "-m", "wavenet_names", "train", "--out", "run", *tiny],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    data = Path(json.loads((elsewhere / "run" / "metrics.json").read_text())["train_config"]["data"])
    assert data.is_relative_to(site) and data.read_bytes() == NAMES_TXT.read_bytes()  # the wheel's own copy


def local_imports(module: Path) -> set[str]:
    """The package's modules that `module` imports (from . import x, from .x import y)."""
    imported = set()
    for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            imported |= {node.module} if node.module else {alias.name for alias in node.names}
    return imported


def test_the_modules_import_each_other_without_cycles():
    """Layered imports: helpers at the bottom, models above them, training above models, the CLI
    on top. A cycle means two modules each know the other's insides."""
    graph = {path.stem: local_imports(path) - {"__init__"} for path in PACKAGE.glob("*.py") if path.stem != "__init__"}
    assert graph["cli"] and graph["training"] and graph["models"]  # the parser sees the imports it must
    order: list[str] = []  # modules whose imports are all done: a topological order
    visiting: list[str] = []

    def visit(name):
        assert name not in visiting, f"import cycle: {' -> '.join(visiting[visiting.index(name) :] + [name])}"
        if name in order:
            return
        visiting.append(name)
        for dependency in sorted(graph[name]):
            visit(dependency)
        visiting.pop()
        order.append(name)

    for name in sorted(graph):
        visit(name)
    assert not any("cli" in imports for name, imports in graph.items() if name != "__main__"), "only __main__ runs cli"
