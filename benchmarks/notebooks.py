"""Wall time to execute every chapter notebook of the book in a fresh kernel.

The notebooks are taken in ``_toc.yml`` order and run one after the other with nbclient, in
this process, each in a new ``python3`` kernel started in the notebook's own folder (as
``make notebooks`` and nbval run them). The notebooks are read into memory and executed
there: the files in the repository are never written. The time of a notebook includes
starting its kernel. ``--quick`` runs only the first chapter.

This appendix's own page (``book/appendix/performance``) plots these results, so it is not
one of the notebooks measured.

Run: ``python benchmarks/notebooks.py [--quick] [--out DIR]``.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import nbformat
import yaml
from common import log, parse_args, pick_device, write_json
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
SKIP = {"book/appendix/performance"}  # the page that plots these numbers


def toc_notebooks() -> list[Path]:
    """Every notebook listed in _toc.yml, in its order (Markdown pages left out)."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for entry in entries:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections", []))

    for part in toc.get("parts", []):
        walk(part.get("chapters", []))
    walk(toc.get("chapters", []))
    notebooks = []
    for name in files:
        path = ROOT / f"{name}.ipynb"
        if name in SKIP or not path.exists():
            continue
        notebooks.append(path)
    return notebooks


def code_digest(nb) -> str:
    """SHA-256 of a notebook's code cells, in order: what its run time depends on."""
    sources = "\n# %%\n".join(c.source for c in nb.cells if c.cell_type == "code")
    return hashlib.sha256(sources.encode()).hexdigest()


def execute(path: Path) -> dict:
    """Run one notebook in a fresh kernel; return its wall time, cell count and any error."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    start = time.perf_counter()
    error = None
    try:
        client.execute()
    except Exception as exc:  # a failing notebook is recorded, and the run goes on
        error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc) else ''}"
    seconds = time.perf_counter() - start
    code_cells = sum(1 for c in nb.cells if c.cell_type == "code")
    return {
        "notebook": str(path.relative_to(ROOT)),
        "seconds": seconds,
        "code_cells": code_cells,
        # Which version of the code was timed: a chapter's stated run time is checked
        # against this row only while its code is the same (tests/test_notebooks.py).
        "code_sha256": code_digest(nb),
        "ok": error is None,
        "error": error,
    }


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    device = pick_device()
    notebooks = toc_notebooks()
    if args.quick:
        notebooks = notebooks[:1]
    rows = []
    for path in notebooks:
        row = execute(path)
        rows.append(row)
        status = "ok" if row["ok"] else f"FAILED ({row['error']})"
        log(f"{row['seconds']:7.1f} s  {row['notebook']}  {status}")
    total = sum(row["seconds"] for row in rows)
    log(f"{total:7.1f} s  total, {len(rows)} notebooks")
    write_json(
        "notebooks",
        {
            "quick": args.quick,
            "what": "wall time to execute each chapter notebook in a fresh kernel (nbclient)",
            "notebooks": rows,
            "total_seconds": total,
            "all_ok": all(row["ok"] for row in rows),
        },
        args.out,
        device,
    )
    if not all(row["ok"] for row in rows):
        raise SystemExit("some notebooks failed; see the log above")


if __name__ == "__main__":
    main()
