"""The package's architecture, held by its import graph (DESIGN §4):

- model code never imports plotting;
- the language knows no model;
- Part I and Part II modules never import Part III's;
- one transformer block class; the core never imports ``transformers``.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "tinyformer"

PART_III = {"seq2seq"}
PLOTTING = {"plot"}
MODEL_CODE = {
    "attention", "blocks", "checks", "config", "decode", "decoder", "encoder", "fast",
    "layers", "objectives", "seq2seq", "stack", "torch_bridge", "train",
}  # fmt: skip
PART_I_AND_II = MODEL_CODE - PART_III
LANGUAGE = {"language", "vocab"}
NO_TRANSFORMERS = MODEL_CODE | LANGUAGE | PLOTTING  # everything but pretrained


def modules() -> dict[str, Path]:
    return {p.stem: p for p in PACKAGE.glob("*.py") if p.stem != "__init__"}


def imports(path: Path) -> set[str]:
    """Every module that ``path`` imports, as dotted names (relative imports resolved)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # from . import x / from .x import y
                base = "tinyformer" + ("." + base if base else "")
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


def tinyformer_imports(name: str) -> set[str]:
    names = {i.split(".")[1] for i in imports(modules()[name]) if i.startswith("tinyformer.")}
    return names & set(modules())


def test_every_module_is_classified():
    assert set(modules()) == MODEL_CODE | LANGUAGE | PLOTTING | {"pretrained"}


@pytest.mark.parametrize("name", sorted(MODEL_CODE))
def test_model_code_never_imports_plotting(name):
    assert not tinyformer_imports(name) & PLOTTING
    assert not any(i.startswith("matplotlib") for i in imports(modules()[name]))


@pytest.mark.parametrize("name", sorted(LANGUAGE))
def test_the_language_knows_no_model(name):
    assert tinyformer_imports(name) <= LANGUAGE
    assert "torch.nn" not in imports(modules()[name])


@pytest.mark.parametrize("name", sorted(PART_I_AND_II))
def test_parts_one_and_two_never_import_part_three(name):
    assert not tinyformer_imports(name) & PART_III


@pytest.mark.parametrize("name", sorted(NO_TRANSFORMERS))
def test_the_core_never_imports_hugging_face(name):
    assert not any(
        i.split(".")[0] in ("transformers", "tokenizers") for i in imports(modules()[name])
    )


def test_one_transformer_block_class():
    """Exactly one class in the package holds attention and a feed-forward network."""
    blocks = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                source = ast.unparse(node)
                if "MultiHeadAttention(" in source and "FeedForward(" in source:
                    blocks.append(f"{name}.{node.name}")
    assert blocks == ["blocks.TransformerBlock"]


def test_the_import_check_can_fail():
    """The checker sees imports written in every form (so a pass above means something)."""
    source = (
        "import matplotlib.pyplot as plt\nfrom tinyformer.seq2seq import X\nfrom . import plot\n"
    )
    tmp = PACKAGE.parent / "_probe_imports.py"
    tmp.write_text(source)
    try:
        found = imports(tmp)
    finally:
        tmp.unlink()
    assert {"matplotlib.pyplot", "tinyformer.seq2seq", "tinyformer.plot"} <= found
