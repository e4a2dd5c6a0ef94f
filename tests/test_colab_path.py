"""The Colab path: a chapter runs with tinyformer *installed*, far from this repository.

In Colab a notebook arrives alone: no repository around it, no editable install, no ``src/``
on any path. Its first cell pip-installs tinyformer, and every later cell must work with what
that install put in site-packages. Everywhere else we test the notebooks against the
repository's editable install, which would hide a module that is missing from the built
package, data that is not packaged, or an import that only works from the source tree.

So this test builds a wheel of tinyformer, installs it into a fresh virtual environment
(with the wheel's own dependencies and what executing a notebook needs, at the versions
requirements.txt pins), copies one chapter notebook alone into an empty folder and runs it
there through nbval with that environment's interpreter, stored outputs compared. It then
checks that the kernel imported tinyformer from the fresh environment's site-packages.
Slow (a fresh environment with torch): run it with
``.venv/bin/python -m pytest -o addopts="" -m colab_path tests/test_colab_path.py``.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import nbformat
import pytest
from conftest import ROOT

pytestmark = pytest.mark.colab_path

# A fast chapter that uses much of the package: attention, masks, compat, decoder, encoder,
# language, plot, seq2seq, train and vocab.
NOTEBOOK = ROOT / "book" / "part3_cross_attention" / "10_the_encoder_decoder.ipynb"
# What executing a notebook under nbval needs besides the wheel and its dependencies.
RUNNERS = ["pytest", "nbval", "nbclient", "ipykernel"]
LOCATION_FILE = "tinyformer_location.txt"


def run(args, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, (
        f"{' '.join(map(str, args))} failed ({result.returncode}):\n"
        f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    )
    return result


def clean_env() -> dict:
    """This process's environment minus anything that would point Python at the repository."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "1")
    return env


def build_wheel(out: Path) -> Path:
    """A wheel of tinyformer, built from a copy of the package's files (the tree stays clean)."""
    source = out / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    wheels = out / "wheels"
    args = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels)]
    try:  # build offline with this environment's setuptools when it is recent enough
        major = int(importlib.metadata.version("setuptools").split(".")[0])
    except importlib.metadata.PackageNotFoundError:
        major = 0
    if major >= 77:
        args.append("--no-build-isolation")
    run([*args, str(source)], env=clean_env())
    (wheel,) = wheels.glob("tinyformer-*.whl")
    return wheel


def pins() -> list[str]:
    """requirements.txt's exact pins, without the editable install of this repository."""
    return [
        line.strip()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if "==" in line and not line.strip().startswith(("#", "-"))
    ]


def test_a_chapter_runs_from_the_installed_wheel_alone(tmp_path: Path):
    env = clean_env()
    wheel = build_wheel(tmp_path)

    # A fresh environment that cannot see this repository's .venv or src/.
    home = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(home)
    python = home / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("\n".join(pins()) + "\n")
    run(
        [str(python), "-m", "pip", "install", "--quiet", "-c", str(constraints), str(wheel)]
        + RUNNERS,
        env=env,
    )

    # The notebook alone in an empty folder, with the sanitizer nbval needs.
    work = tmp_path / "colab"
    work.mkdir()
    shutil.copy(ROOT / "tests" / "nbval_sanitize.cfg", work / "nbval_sanitize.cfg")
    (work / "pytest.ini").write_text("[pytest]\n")  # keeps pytest from looking further up
    # One extra cell at the end records where the kernel found tinyformer. Its output is
    # ignored by nbval; every stored output before it is compared.
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(
        nbformat.v4.new_code_cell(
            "import pathlib, sys, tinyformer\n"
            f"pathlib.Path({LOCATION_FILE!r}).write_text("
            "tinyformer.__file__ + '\\n' + sys.executable + '\\n')",
            metadata={"tags": ["nbval-ignore-output"]},
        )
    )
    nbformat.write(nb, work / NOTEBOOK.name)

    result = subprocess.run(
        [
            str(python),
            "-m",
            "pytest",
            "--nbval",
            "--nbval-current-env",
            "--nbval-sanitize-with",
            "nbval_sanitize.cfg",
            "--nbval-cell-timeout=600",
            "-p",
            "no:cacheprovider",
            "-q",
            NOTEBOOK.name,
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, (
        f"{NOTEBOOK.name} fails with tinyformer installed from its wheel:\n"
        f"{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
    )

    module_file, kernel_python = (work / LOCATION_FILE).read_text().split("\n")[:2]
    site_packages = run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        env=env,
    ).stdout.strip()
    module = Path(module_file).resolve()
    assert module.is_relative_to(Path(site_packages).resolve()), (
        f"the kernel imported tinyformer from {module}, not from the fresh environment's "
        f"site-packages {site_packages}"
    )
    assert not module.is_relative_to(ROOT), f"tinyformer came from the repository: {module}"
    # (Not resolved: a venv's interpreter is a symbolic link to the base interpreter.)
    assert Path(os.path.abspath(kernel_python)).is_relative_to(home), kernel_python
