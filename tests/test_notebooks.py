"""Notebook hygiene: the rules of DESIGN §3 that nbval itself does not check.

Each failure says what to run to fix it.
"""

from __future__ import annotations

import hashlib
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


# --- the book conventions of DESIGN §3 (issue "The book reads like a book") --------------------

CHAPTER_LINK = re.compile(r"(?<!\[)\bChapters? \d+")  # "Chapter N" not already link text
TIMES = ROOT / "benchmarks" / "results" / "notebooks.json"


def _markdown(nb) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "markdown"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_nbval_markers_are_cell_tags_not_comments(path: Path):
    nb = nbformat.read(path, as_version=4)
    comments = [i for i, c in enumerate(nb.cells) if "NBVAL" in c.source.upper()]
    assert not comments, (
        f"{path.name}: cells {comments} mention NBVAL in their source; use the cell tags "
        "`nbval-ignore-output` / `nbval-skip` in the py:percent header (# %% tags=[...])"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_every_figure_has_a_caption_a_name_and_alt_text(path: Path):
    nb = nbformat.read(path, as_version=4)
    missing = []
    for i, cell in enumerate(nb.cells):
        figures = [o for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
        if not figures:
            continue
        meta = cell.metadata.get("mystnb", {})
        caption = meta.get("figure", {}).get("caption", "")
        name = meta.get("figure", {}).get("name", "")
        alt = meta.get("image", {}).get("alt", "")
        if len(figures) > 1 or len(caption) < 10 or not name or len(alt) < 10:
            missing.append(i)
    assert not missing, (
        f"{path.name}: figure cells {missing} need one figure each, with mystnb figure caption "
        "and name, and image alt text, in the cell header (see CONTRIBUTING.md)"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_figure_cells_fold_their_code(path: Path):
    nb = nbformat.read(path, as_version=4)
    unfolded = [
        i
        for i, c in enumerate(nb.cells)
        if any("image/png" in o.get("data", {}) for o in c.get("outputs", []))
        and not {"hide-input", "remove-input"} & set(c.metadata.get("tags", []))
        and "plt." in c.source
        and len(c.source.splitlines()) > 12
    ]
    assert not unfolded, f"{path.name}: plotting cells {unfolded} should carry `hide-input`"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_code_fits_the_book_column_and_outputs_stay_short(path: Path):
    nb = nbformat.read(path, as_version=4)
    long_lines = [
        (i, line)
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and "remove-cell" not in c.metadata.get("tags", [])
        for line in c.source.splitlines()
        if len(line) > 88
    ]
    assert not long_lines, f"{path.name}: code lines over 88 columns: {long_lines[:3]}"
    long_outputs = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            text = out.get("text") or out.get("data", {}).get("text/plain", "")
            if isinstance(text, list):
                text = "".join(text)
            if "image/png" not in out.get("data", {}) and len(text.splitlines()) > 30:
                long_outputs.append((i, len(text.splitlines())))
    assert not long_outputs, f"{path.name}: outputs longer than 30 lines: {long_outputs}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_chapter_mentions_are_links(path: Path):
    nb = nbformat.read(path, as_version=4)
    bare = []
    for source in _markdown(nb):
        for line in source.splitlines():
            if line.lstrip().startswith("#"):
                continue  # the chapter's own heading
            bare += CHAPTER_LINK.findall(line)
    assert not bare, f"{path.name}: make these links to their chapters: {bare[:5]}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_opens_with_a_colab_badge_and_its_run_time(path: Path):
    import json

    nb = nbformat.read(path, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "markdown").source
    repo = book_config()["repository"]
    relative = path.relative_to(ROOT).as_posix()
    url = (
        "https://colab.research.google.com/github/"
        + repo["url"].removeprefix("https://github.com/")
        + f"/blob/{repo['branch']}/{relative}"
    )
    assert f'<a class="colab-badge" href="{url}">' in first, (
        f"{path.name}: the first markdown cell must open with the Colab badge linking to {url}"
    )
    found = re.search(r"runs in about (\d+) (s|min) on two CPU cores", first)
    assert found, (
        f"{path.name}: say how long the chapter runs ('runs in about N s on two CPU cores')"
    )
    if TIMES.exists():
        # Checked against the last `make bench` only if it timed this version of the code
        # (a row records the SHA-256 of the code cells it ran); a stale row checks nothing.
        sources = "\n# %%\n".join(c.source for c in nb.cells if c.cell_type == "code")
        digest = hashlib.sha256(sources.encode()).hexdigest()
        rows = json.loads(TIMES.read_text()).get("notebooks", [])
        measured = [
            r["seconds"]
            for r in rows
            if r.get("notebook") == relative and r.get("ok") and r.get("code_sha256") == digest
        ]
        if measured:
            seconds = int(found[1]) * (60 if found[2] == "min" else 1)
            # "about": within a factor of two of the measurement, and never under 5 s off.
            assert abs(seconds - measured[0]) <= max(5, measured[0]), (
                f"{path.name} says {found[0]}; benchmarks/results/notebooks.json measured "
                f"{measured[0]:.0f} s"
            )
