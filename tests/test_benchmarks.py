"""The benchmark scripts run (in --quick mode) and write the JSON the appendix plots.

Each script runs as a reader would run it, ``python benchmarks/<name>.py --quick --out DIR``,
in a subprocess with one thread. The numbers are not checked (quick runs measure little on a
busy machine); the structure, the machine record and the claims that must hold on any machine
are (the two implementations agree, generation with and without the cache is identical).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

from tinyformer.config import TransformerConfig
from tinyformer.decoder import DecoderLM

BENCHMARKS = ROOT / "benchmarks"
SCRIPTS = ["attention_scaling", "training_throughput", "generation", "notebooks", "mixed_precision"]
MACHINE_KEYS = {
    "cpu",
    "logical_cores",
    "torch_threads",
    "torch",
    "python",
    "device",
    "device_name",
    "date",
}


def positive(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    """Run every script once in quick mode; script name -> its parsed JSON (or the failure)."""
    out = tmp_path_factory.mktemp("bench")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    suffix = "-cuda" if torch.cuda.is_available() else ""
    found = {}
    for name in SCRIPTS:
        run = subprocess.run(
            [sys.executable, str(BENCHMARKS / f"{name}.py"), "--quick", "--out", str(out)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        path = out / f"{name}{suffix}.json"
        if run.returncode != 0 or not path.exists():
            found[name] = f"exit {run.returncode}\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}"
        else:
            found[name] = json.loads(path.read_text())
    return found


def load(results: dict, name: str) -> dict:
    data = results[name]
    assert isinstance(data, dict), f"benchmarks/{name}.py --quick failed:\n{data}"
    return data


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_writes_json_with_a_machine_record(results, name):
    data = load(results, name)
    assert data["benchmark"] == name
    assert data["quick"] is True
    machine = data["machine"]
    assert MACHINE_KEYS <= set(machine), f"machine record lacks {MACHINE_KEYS - set(machine)}"
    assert machine["torch"] == torch.__version__
    assert machine["torch_threads"] == 1, "OMP_NUM_THREADS=1 should give one torch thread"
    assert positive(machine["logical_cores"]) and machine["cpu"]
    assert machine["device"] == ("cuda" if torch.cuda.is_available() else "cpu")


def test_attention_scaling(results):
    data = load(results, "attention_scaling")
    lengths = data["lengths"]
    assert lengths == [64, 128]
    assert set(data["results"]) == {"plain", "tinyformer", "sdpa", "feed_forward"}
    for name, series in data["results"].items():
        assert len(series["median_s"]) == len(lengths), name
        assert all(positive(t) for t in series["median_s"] + series["min_s"]), name
        assert math.isfinite(data["slopes"][name]), name
    # The three implementations compute the same function.
    assert max(data["max_abs_diff_between_implementations"]) < 1e-4
    assert data["score_matrix_bytes"] == [4 * 4 * T * T for T in lengths]


def test_training_throughput(results):
    data = load(results, "training_throughput")
    assert [r["config"]["d_model"] for r in data["results"]] == [64, 128]
    for row in data["results"]:
        assert row["parameters"]["tinyformer"] == row["parameters"]["torch"], "not the same size"
        assert row["max_abs_logit_diff_at_start"] < 1e-4, "not the same function"
        assert all(positive(v) for v in row["tokens_per_s"].values())
        assert positive(row["ratio_tinyformer_over_torch"])
        assert len(row["seconds_per_step"]["tinyformer"]) == data["setup"]["rounds"]


def test_generation_with_and_without_cache_is_identical(results):
    data = load(results, "generation")
    assert data["identical"] is True
    assert set(data["results"]) == {"chapter5", "baby_gpt"}
    for name, model in data["results"].items():
        assert [row["new_tokens"] for row in model["rows"]] == [16, 32], name
        for row in model["rows"]:
            assert row["identical"] is True, (name, row["new_tokens"])
            # The simple KVCache, tinyformer.fast.BufferedKVCache, and no cache at all.
            assert set(row["tokens_per_s"]) == {"cache", "buffered", "no_cache"}
            assert all(positive(v) for v in row["tokens_per_s"].values())
            assert positive(row["speedup_cache_over_no_cache"])
            assert positive(row["speedup_buffered_over_no_cache"])
    assert data["results"]["baby_gpt"]["config"]["d_model"] == 384


def test_generation_times_reading_every_weight_matrix(results):
    data = load(results, "generation")
    for name, model in data["results"].items():
        reading = model["weight_reading"]
        # Every nn.Linear of the model, each weight read once: 4 bytes per float32 number.
        layers = DecoderLM(TransformerConfig(**model["config"])).modules()
        linears = [m for m in layers if isinstance(m, torch.nn.Linear)]
        assert reading["linear_layers"] == len(linears) > 0, name
        assert reading["weight_bytes"] == 4 * sum(m.weight.numel() for m in linears), name
        for key in ("matvec_s", "sum_s", "matvec_gb_per_s", "sum_gb_per_s"):
            assert positive(reading[key]), (name, key)
        gb_per_s = reading["weight_bytes"] / reading["matvec_s"] / 1e9
        assert reading["matvec_gb_per_s"] == pytest.approx(gb_per_s)


def test_notebooks(results):
    data = load(results, "notebooks")
    (row,) = data["notebooks"]
    assert row["notebook"] == "book/part1_decoder/01_the_toy_language.ipynb"
    assert row["ok"] and positive(row["seconds"])
    assert data["total_seconds"] == pytest.approx(row["seconds"])


def test_make_bench_runs_every_script():
    scripts = sorted(p.stem for p in BENCHMARKS.glob("*.py") if p.stem != "common")
    assert scripts == sorted(SCRIPTS), f"tests/test_benchmarks.py does not run {scripts}"
    makefile = (ROOT / "Makefile").read_text()
    match = re.search(r"^bench:.*\n((?:\t.*\n?)+)", makefile, flags=re.M)
    assert match, "the Makefile has no `bench` target"
    assert all(name in match.group(1) for name in SCRIPTS), "`make bench` misses a script"
    assert re.search(r"^\.PHONY:.*\bbench\b", makefile, flags=re.M)


def test_mixed_precision(results):
    data = load(results, "mixed_precision")
    assert data["setup"]["compile_backend"] == "aot_eager", "--quick compiles without codegen"
    assert set(data["results"]) == {"fp32", "bf16", "compile"}
    rounds = data["setup"]["rounds"]
    for name, row in data["results"].items():
        assert positive(row["tokens_per_s"]) and positive(row["ratio_vs_fp32"]), name
        assert len(row["tokens_per_s_rounds"]) == rounds, name
        assert math.isfinite(row["val_loss"]) and math.isfinite(row["loss_diff_vs_fp32"]), name
    assert data["results"]["fp32"]["ratio_vs_fp32"] == 1.0
    # The compiled model computes what the eager one does; bfloat16 rounds, a little.
    assert abs(data["results"]["compile"]["loss_diff_vs_fp32"]) < 1e-3
    assert abs(data["results"]["bf16"]["loss_diff_vs_fp32"]) < 0.05


def test_no_quick_results_are_committed():
    for path in (BENCHMARKS / "results").glob("*.json"):
        assert json.loads(path.read_text()).get("quick") is False, (
            f"{path.relative_to(ROOT)} holds quick-mode results; run `make bench` for real ones"
        )
