"""The repository's own files: CI workflows, licences, citation metadata, appendix pages.

The GitHub workflows must run what .ci/run and the Makefile run, nothing of their own, so
that a green local `.ci/run` means a green CI. Each failure says what to change.
"""

from __future__ import annotations

import datetime
import re

import pytest
import yaml
from conftest import ROOT, book_config, toc_files

WORKFLOWS = ROOT / ".github" / "workflows"
WORKFLOW_FILES = sorted(WORKFLOWS.glob("*.yml"))
CI_RUN = ROOT / ".ci" / "run"

# `run:` lines allowed in a workflow although .ci/run does not contain them verbatim.
# Each one needs its reason here; keep the list short.
WHITELIST = {
    # The CI job runs the script itself: .ci/run is the single list of checks.
    "bash .ci/run",
}


def _workflow(path):
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path.name} does not parse to a mapping"
    return data


def _triggers(data: dict):
    # YAML 1.1 (PyYAML) reads the bare key `on` as the boolean True.
    return data.get("on", data.get(True))


def _run_lines(data: dict) -> list[str]:
    """Every command line of every `run:` step, comments and blank lines dropped."""
    lines = []
    for job in data["jobs"].values():
        for step in job.get("steps", []):
            for line in str(step.get("run", "")).splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    lines.append(line)
    return lines


def _ci_run_lines() -> set[str]:
    return {
        line.strip()
        for line in CI_RUN.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    }


def _make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-z][\w-]*):", text, flags=re.M))


def test_there_are_workflows():
    names = {p.name for p in WORKFLOW_FILES}
    assert {"ci.yml", "deploy.yml"} <= names, f"expected ci.yml and deploy.yml in {WORKFLOWS}"


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=[p.name for p in WORKFLOW_FILES])
def test_workflow_runs_only_what_ci_run_or_the_makefile_runs(path):
    data = _workflow(path)
    assert _triggers(data), f"{path.name}: no `on:` triggers"
    assert data.get("jobs"), f"{path.name}: no jobs"
    allowed = _ci_run_lines() | WHITELIST
    targets = _make_targets()
    strays = []
    for line in _run_lines(data):
        # .ci/run runs as root in its container; a GitHub runner needs sudo for the same command.
        command = line.removeprefix("sudo ").strip()
        words = command.split()
        is_make_target = len(words) == 2 and words[0] == "make" and words[1] in targets
        if command not in allowed and not is_make_target:
            strays.append(line)
    assert not strays, (
        f"{path.name} runs commands that neither .ci/run nor the Makefile runs: {strays}; "
        "add them to .ci/run (or a Makefile target) first, or whitelist them with a reason "
        "in tests/test_repo_files.py"
    )


def test_ci_workflow_runs_ci_run_on_both_pythons_and_keeps_the_reports():
    data = _workflow(WORKFLOWS / "ci.yml")
    triggers = _triggers(data)
    assert "push" in triggers and "pull_request" in triggers, "ci.yml: run on push and pull_request"
    (job,) = data["jobs"].values()
    assert job["runs-on"] == "ubuntu-latest"
    versions = [str(v) for v in job["strategy"]["matrix"]["python-version"]]
    assert versions == ["3.11", "3.12"], f"ci.yml: Python matrix is {versions}"
    assert "bash .ci/run" in _run_lines(data), "ci.yml must run .ci/run itself"
    setup = next(
        s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/setup-python")
    )
    assert setup["with"]["cache"] == "pip" and setup["with"]["cache-dependency-path"] == (
        "requirements.txt"
    ), "ci.yml: cache pip keyed on requirements.txt"
    upload = next(
        s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact")
    )
    assert upload.get("if") == "failure()"
    paths = upload["with"]["path"].split()
    assert paths == ["_build/html/reports", "_build/screenshots"], paths


@pytest.mark.parametrize("name", ["ci.yml", "deploy.yml"])
def test_workflows_install_the_cpu_build_of_torch(name):
    env = _workflow(WORKFLOWS / name).get("env", {})
    assert env.get("PIP_EXTRA_INDEX_URL") == "https://download.pytorch.org/whl/cpu", (
        f"{name}: set PIP_EXTRA_INDEX_URL to PyTorch's CPU index (requirements.txt pins the CPU torch)"
    )


def test_deploy_workflow_publishes_the_built_book():
    data = _workflow(WORKFLOWS / "deploy.yml")
    triggers = _triggers(data)
    assert triggers["push"]["branches"] == ["main"] and "workflow_dispatch" in triggers
    assert data["permissions"]["pages"] == "write" and data["permissions"]["id-token"] == "write"
    assert data["concurrency"]["group"] == "pages"
    assert "make book" in _run_lines(data)
    uses = {
        str(s.get("uses", "")).split("@")[0]: s
        for job in data["jobs"].values()
        for s in job.get("steps", [])
    }
    assert uses["actions/upload-pages-artifact"]["with"]["path"] == "_build/html"
    assert "actions/deploy-pages" in uses


def test_citation_cff():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    required = {"cff-version", "message", "title", "authors"}
    assert required <= set(cff), f"CITATION.cff lacks {required - set(cff)}"
    assert cff["cff-version"] == "1.2.0"
    assert cff["authors"] and all("name" in a or "family-names" in a for a in cff["authors"]), (
        "every author needs `name` (an entity) or `family-names` (a person)"
    )
    assert cff["license"] == "MIT"
    assert cff["repository-code"] == book_config()["repository"]["url"], (
        "CITATION.cff repository-code differs from _config.yml's repository url"
    )
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert str(cff["version"]) == version.group(1), "CITATION.cff version differs from pyproject"
    assert isinstance(cff["date-released"], datetime.date), "date-released must be YYYY-MM-DD"


def test_licences():
    mit = (ROOT / "LICENSE").read_text()
    assert mit.startswith("MIT License") and "Copyright (c) 2026" in mit
    content = (ROOT / "LICENSE-CONTENT").read_text()
    assert "CC BY 4.0" in content and "https://creativecommons.org/licenses/by/4.0/" in content
    readme = (ROOT / "README.md").read_text()
    assert "\n## Licence\n" in readme, "README.md needs a Licence section"
    assert "creativecommons.org/licenses/by/4.0" in book_config()["html"]["extra_footer"]


def test_appendix_pages_are_in_the_toc_before_the_bibliography():
    files = toc_files()
    pages = ["book/appendix/notation", "book/appendix/glossary", "book/appendix/bibliography"]
    missing = [p for p in pages if p not in files]
    assert not missing, f"_toc.yml lacks {missing}"
    positions = [files.index(p) for p in pages]
    assert positions == sorted(positions), "list notation and glossary before the bibliography"


def _glossary_terms() -> set[str]:
    text = (ROOT / "book" / "appendix" / "glossary.md").read_text()
    block = text.split("```{glossary}", 1)[1].split("```", 1)[0]
    return {
        line.strip().lower()
        for line in block.splitlines()
        if line.strip() and not line.startswith((" ", ":"))
    }


def test_every_term_role_points_into_the_glossary():
    """{term}`x` and {term}`text <x>` must name a glossary entry (the book build fails otherwise)."""
    terms = _glossary_terms()
    assert {"query", "key", "value", "causal mask", "cross attention"} <= terms
    role = re.compile(r"\{term\}`([^`]+)`")
    unknown = []
    for path in sorted((ROOT / "book").rglob("*")):
        if path.suffix not in (".py", ".md") or {"_build", ".ipynb_checkpoints"} & set(path.parts):
            continue
        for found in role.findall(path.read_text()):
            target = re.search(r"<([^>]+)>$", found)
            name = (target.group(1) if target else found).strip().lower()
            if name not in terms:
                unknown.append(f"{path.relative_to(ROOT)}: {found}")
    assert not unknown, (
        f"{{term}} roles without a glossary entry: {unknown}; add the term to "
        "book/appendix/glossary.md or link an existing one as {term}`text <term>`"
    )
