"""The project itself: its packaging, its dependency lists and its documented settings."""

from __future__ import annotations

import ast
import os
import re
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest
import tomllib
import yaml

from mnr import settings
from mnr.config import SHIPPED_EXPERIMENTS

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_conda_env_lists_the_same_dependencies_as_pyproject() -> None:
    conda = yaml.safe_load((ROOT / "conda.yaml").read_text())
    pip = next(item["pip"] for item in conda["dependencies"] if isinstance(item, dict))
    assert sorted(dep for dep in pip if dep != "-e .") == sorted(
        PYPROJECT["project"]["dependencies"]
    )


def test_every_package_under_mnr_is_packaged() -> None:
    found = {
        ".".join(path.parent.relative_to(ROOT).parts)
        for path in (ROOT / "mnr").rglob("__init__.py")
    }
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    assert found <= listed, f"add {sorted(found - listed)} to [tool.setuptools] packages"
    assert "mnr.experiments" in listed


def test_readme_documents_every_environment_variable() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Environment variables") :]
    for var in settings.all_vars():
        assert re.search(rf"^\| `{var.name}` \|", table, re.MULTILINE), f"README lacks {var.name}"


def mnr_import_graph() -> dict[str, set[str]]:
    """Every module under mnr/ and the mnr modules it imports anywhere (functions included).

    A package is its `__init__`; `from mnr.x import y` is an import of `mnr.x.y` when that is a
    module, else of `mnr.x`. Importing a submodule is not counted as importing its parents.
    """
    modules = {}
    for path in (ROOT / "mnr").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = graph.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names if alias.name in modules)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in node.names:
                    if f"{base}.{alias.name}" in modules:
                        edges.add(f"{base}.{alias.name}")
                    elif base in modules:
                        edges.add(base)
        edges.discard(name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle in `graph` as a path that starts and ends at the same module, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_mnr() -> None:
    cycle = find_cycle(mnr_import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_tracking_does_not_import_predict() -> None:
    """`mnr.tracking` is MLflow I/O; the logged predictor lives in `mnr.predict`, above it."""
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in mnr_import_graph().items()
        if module.startswith("mnr.tracking")
        for target in targets
        if target.startswith("mnr.predict")
    )
    assert not upward, f"mnr.tracking imports mnr.predict: {upward}"


def venv_seeing_this_environment(env_dir: Path) -> Path:
    """A new venv at `env_dir` whose own packages come first and which then sees every package of
    the interpreter running the tests; returns its python.

    `venv.create(system_site_packages=True)` is not that: it exposes the *base* interpreter's
    site-packages, so when the tests themselves run in a venv (the README's set-up) the new one
    lacks torch, mlflow and the rest. A `.pth` file in the new venv's site-packages that adds the
    running interpreter's site directories (`site.addsitedir`, so their own `.pth` files, such as
    editable installs, work too) gives the same view from a venv, a conda env or a system Python,
    with no second copy of PyTorch. The directories go after the new venv's own, as system
    site-packages would, so a package installed into the new venv wins.
    """
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    seen = site.getsitepackages() + ([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])
    # The new venv names its own site-packages (Debian's Python lays out paths its own way).
    ask = [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]
    purelib = Path(subprocess.run(ask, capture_output=True, text=True, check=True).stdout.strip())
    calls = "; ".join(f"site.addsitedir({path!r})" for path in seen)
    (purelib / "_running_environment.pth").write_text(f"import site; {calls}\n")
    return python


@pytest.mark.slow
def test_a_wheel_carries_the_experiment_configs(tmp_path: Path) -> None:
    """A wheel, installed without the source tree, still resolves `mnr train --model bn_cnn`."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # no source tree on the path
    dist = tmp_path / "dist"
    pip_wheel = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "-q",
        "-w",
        str(dist),
        str(ROOT),
    ]
    subprocess.run(pip_wheel, env=env, check=True, timeout=600)
    wheel = next(dist.glob("mnr-*.whl"))
    env_dir = tmp_path / "venv"
    python = venv_seeing_this_environment(env_dir)
    # --force-reinstall: the venv sees the running environment's (editable) mnr as installed
    install = [python, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel)]
    subprocess.run(install, env=env, check=True, timeout=600)
    outside = tmp_path / "elsewhere"  # no experiments/ folder anywhere near
    outside.mkdir()
    where = subprocess.run(
        [
            python,
            "-c",
            "import mnr, mnr.config as c; print(mnr.__file__); print(c.experiments_dir())",
        ],
        cwd=outside,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert where[0].startswith(str(env_dir)), (
        "the test must run the installed wheel, not the source tree"
    )
    assert set(SHIPPED_EXPERIMENTS) <= {p.stem for p in Path(where[1]).glob("*.yaml")}
    printed = subprocess.run(
        [env_dir / "bin" / "mnr", "train", "--model", "bn_cnn", "--print-config"],
        cwd=outside,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    shipped = yaml.safe_load((ROOT / "experiments" / "bn_cnn.yaml").read_text())
    resolved = yaml.safe_load(printed)
    assert resolved["model"]["name"] == "bn_cnn"
    assert resolved["optim"] == {
        **resolved["optim"],
        **shipped["optim"],
    }  # bn_cnn.yaml, not defaults
