"""Notebook hygiene: the rules of DESIGN §3 that nbval itself does not check.

Each failure says what to run to fix it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import BOOK, ROOT, book_config, notebooks, toc_files

NOTEBOOKS = notebooks()
IDS = [str(p.relative_to(ROOT)) for p in NOTEBOOKS]
FIX = "run `make notebooks` and commit both files"


def test_there_are_notebooks():
    assert NOTEBOOKS, "expected chapter notebooks under book/, found none"


def test_every_notebook_has_its_py_twin_and_back():
    twins = {p.with_suffix(".py") for p in NOTEBOOKS}
    missing = [str(p.relative_to(ROOT)) for p in twins if not p.exists()]
    assert not missing, f"notebooks without a .py twin: {missing}; {FIX}"
    orphans = [
        str(p.relative_to(ROOT))
        for p in BOOK.rglob("*.py")
        if not p.with_suffix(".ipynb").exists() and ".ipynb_checkpoints" not in p.parts
    ]
    assert not orphans, f".py twins without a notebook: {orphans}; {FIX}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_pair_is_in_sync(path: Path, tmp_path: Path):
    """`jupytext --sync` on a clean tree must change neither file."""
    shutil.copy(ROOT / "jupytext.toml", tmp_path / "jupytext.toml")
    nb, py = tmp_path / path.name, tmp_path / path.with_suffix(".py").name
    shutil.copy(path, nb)
    shutil.copy(path.with_suffix(".py"), py)
    before = (nb.read_text(), py.read_text())
    jupytext = Path(sys.executable).with_name("jupytext")
    run = subprocess.run([str(jupytext), "--sync", str(nb)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    after = (nb.read_text(), py.read_text())
    assert after[0] == before[0], f"{path.name} changes under `jupytext --sync`; {FIX}"
    assert after[1] == before[1], (
        f"{path.with_suffix('.py').name} changes under `jupytext --sync`; {FIX}"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_cells_match_the_py_twin(path: Path):
    """Whichever file is newer, both must hold the same cells (sync is not timestamp luck)."""
    import jupytext

    from_py = jupytext.read(path.with_suffix(".py"))
    from_nb = nbformat.read(path, as_version=4)

    def cells(nb):
        return [(c.cell_type, c.source.strip()) for c in nb.cells]

    assert cells(from_py) == cells(from_nb), f"{path.name} and its .py twin differ; {FIX}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_every_code_cell_was_executed_in_order(path: Path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    counts = [c.execution_count for c in code]
    assert None not in counts, f"{path.name} has code cells that never ran; {FIX}"
    assert counts == list(range(1, len(code) + 1)), (
        f"{path.name} was not run top to bottom in a fresh kernel (execution counts {counts}); {FIX}"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_first_cell_is_the_colab_setup_cell(path: Path):
    nb = nbformat.read(path, as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "code", f"{path.name}: the first cell must be the Colab setup cell"
    assert "remove-cell" in first.metadata.get("tags", []), (
        f"{path.name}: tag the setup cell `remove-cell` so the book hides it"
    )
    src = first.source
    assert '"google.colab" in sys.modules' in src, f"{path.name}: setup cell must act only in Colab"
    assert "sys.executable" in src and "pip" in src and "%pip" not in src, (
        f"{path.name}: install with subprocess + sys.executable -m pip, not a magic"
    )
    repo = book_config()["repository"]
    found = re.findall(r"git\+(https://[^\s\"'@]+)@([\w.-]+)", src)
    assert found == [(repo["url"], repo["branch"])], (
        f"{path.name}: the setup cell installs from {found}, but _config.yml says "
        f"{repo['url']}@{repo['branch']}; copy the setup cell from another chapter"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_kernelspec_and_figure_format(path: Path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", (
        f"{path.name}: kernelspec must be python3; {FIX}"
    )
    svg = [
        i
        for i, c in enumerate(nb.cells)
        for o in c.get("outputs", [])
        if "image/svg+xml" in o.get("data", {})
    ]
    assert not svg, (
        f"{path.name}: cells {svg} store SVG figures (nbval compares SVG as text); use PNG"
    )


def test_every_notebook_is_in_the_toc_and_every_toc_entry_exists():
    listed = set(toc_files())
    unlisted = [
        i for i, p in zip(IDS, NOTEBOOKS, strict=True) if str(Path(i).with_suffix("")) not in listed
    ]
    assert not unlisted, f"notebooks missing from _toc.yml: {unlisted}"
    dangling = [
        f for f in listed if not any((ROOT / f).with_suffix(s).exists() for s in (".ipynb", ".md"))
    ]
    assert not dangling, f"_toc.yml lists files that do not exist: {dangling}"


def test_no_sys_path_edits_anywhere():
    pattern = re.compile(r"sys\." + r"path\s*(\.(insert|append|extend)|\+?=)")
    offenders = []
    for folder in ("book", "src", "tests", "benchmarks"):
        for p in (ROOT / folder).rglob("*"):
            if (
                p.suffix in (".py", ".ipynb")
                and "_build" not in p.parts
                and pattern.search(p.read_text())
            ):
                offenders.append(str(p.relative_to(ROOT)))
    assert not offenders, (
        f"sys.path edits in {offenders}: install the package instead (pip install -e .)"
    )
