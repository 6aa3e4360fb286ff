"""examples/quickstart.ipynb and the README's Python block, run as written.

The notebook is kept without outputs, and run end to end through a Jupyter kernel.

The notebook runs as a user runs it, on the built-in dataset (`DATA = None`), except that the
built-in set is a tiny one (`MNR_DATA_DIR` pointed at a copy of `synth_root`, marked as the
current generator's) and its parameter cell is replaced with small settings, the way papermill
injects parameters. The kernel inherits the test's environment: its own MNR_HOME, MLflow store
and working folder, and PYTHONPATH with this checkout first, so it imports this mnr.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from mnr.data.builtin import _VERSION_FILE, GENERATOR_VERSION

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "examples" / "quickstart.ipynb"
SMALL = 'MODEL = "baseline_cnn"\nDATA = None\nEPOCHS = 2\nTRIALS = 2\nLR_STEPS = 20\nREGISTERED = "piano-test"\n'
# what may not show in a cell's output: a library's warning or log line
NOISE = ("Warning", "INFO", "mlflow.", "optuna.", "Traceback")


def _tiny_builtin(synth_root: Path, isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make a copy of `synth_root` the built-in dataset, as the current generator's."""
    builtin = isolated.parent / "builtin"
    shutil.copytree(synth_root, builtin)
    (builtin / _VERSION_FILE).write_text(GENERATOR_VERSION + "\n")
    monkeypatch.setenv("MNR_DATA_DIR", str(builtin))


def _read():
    import nbformat

    return nbformat.read(NOTEBOOK, as_version=4)


def test_the_notebook_is_kept_without_outputs() -> None:
    for cell in _read().cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


def test_its_first_code_cell_holds_the_parameters() -> None:
    first = next(cell for cell in _read().cells if cell.cell_type == "code")
    names = {line.split("=")[0].strip() for line in SMALL.splitlines()}
    assert names <= {
        line.split("=")[0].strip() for line in first.source.splitlines() if "=" in line
    }


@pytest.mark.slow
def test_the_quickstart_notebook_runs_in_a_kernel(
    synth_root: Path, empty_store: Path, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nbformat
    from nbclient import NotebookClient

    _tiny_builtin(synth_root, isolated, monkeypatch)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    notebook = _read()
    first = next(cell for cell in notebook.cells if cell.cell_type == "code")
    first.source = SMALL
    notebook.cells.append(nbformat.v4.new_code_cell("import mnr\nprint(mnr.__file__)"))
    NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(isolated)}},
    ).execute()  # raises CellExecutionError on the first cell that fails

    assert notebook.cells[-1].outputs[0]["text"].strip() == str(REPO / "mnr" / "__init__.py")
    assert (isolated / "output.csv").read_text().startswith("filename,label\n")
    shown = [
        output.get("text", "") + str(output.get("data", {}).get("text/plain", ""))
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    ]
    html = [
        output["data"]["text/html"]
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if "text/html" in output.get("data", {})
    ]
    assert any("#/experiments/" in table for table in html)  # result tables link their run
    noise = [text for text in shown if any(word in text for word in NOISE)]
    assert not noise, noise


@pytest.mark.slow
def test_the_readmes_python_block_runs_as_written(
    synth_root: Path, empty_store: Path, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## From Python / in a notebook", 1)[1]
    block = section.split("```python\n", 1)[1].split("```", 1)[0]
    _tiny_builtin(synth_root, isolated, monkeypatch)
    exec(compile(block, "README.md", "exec"), {})  # noqa: S102 (our own README)
    assert (isolated / "output.csv").read_text().startswith("filename,label\n")
