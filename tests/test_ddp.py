"""scripts/train_ddp.py under torchrun, on the CPU with gloo: what data parallelism promises.

- N processes with a global batch of B sentences end with the weights of one process with B;
- a run killed right after a checkpoint and restarted by torchrun (``--max-restarts``)
  continues from that checkpoint by itself, and ends with the weights of a run that was
  never interrupted; ``--resume DIR`` continues another run's checkpoint, with another
  number of processes too (then equal up to rounding, the key biases aside);
- a global batch that the world size does not divide fails at once, on every rank, with a
  message that says so (no rank waits forever for the others); so do other bad arguments.

Each run is ``python -m torch.distributed.run --standalone --nproc_per_node=N ...`` (torchrun
with a free port of its own) in a subprocess with one thread per process and a timeout, on a
tiny model for 10 steps. Together about two minutes on a busy two-core machine (130 s with
the load average near 11), nearly all of it starting processes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time

import pytest
import torch
import torch.distributed as dist
from conftest import ROOT

from tinyformer.language import ToyLanguage

SCRIPT = ROOT / "scripts" / "train_ddp.py"
STEPS, GLOBAL_BATCH, SEED = 10, 12, 3
TINY = [
    "--steps", str(STEPS), "--global-batch", str(GLOBAL_BATCH), "--seed", str(SEED),
    "--d-model", "32", "--n-heads", "2", "--n-layers", "1", "--d-ff", "64",
    "--warmup", "3", "--val-sentences", "50", "--log-every", "5", "--timeout", "60",
]  # fmt: skip
TIMEOUT = 120  # seconds for one launch: a run takes a few, more on a busy machine


# torchrun shares its rendezvous store with the workers' process group, and a restarted
# worker can read the addresses that the dead workers of the previous attempt left in it:
# gloo then waits for them until the timeout (seen here: 1 restart in 3 hung). Not sharing
# the store avoids it (pytorch/pytorch#135712); scripts/train_ddp.py's docstring says so.
RESTARTABLE = {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}


def torchrun(nproc: int, out, *extra: str, timeout: float = TIMEOUT, restarts: int = 0):
    """Launch the script on ``nproc`` local processes; the CompletedProcess."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--max-restarts={restarts}"]
    command += [f"--nproc_per_node={nproc}", str(SCRIPT), *TINY, "--out", str(out), *extra]
    return subprocess.run(
        command,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", **RESTARTABLE},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def succeeded(run) -> None:
    assert run.returncode == 0, f"exit {run.returncode}\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}"


def weights(folder) -> dict[str, torch.Tensor]:
    return torch.load(folder / "final.pt", weights_only=True)


def max_diff(a: dict, b: dict, skip=lambda name: False) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a if not skip(k))


def is_key_bias(name: str) -> bool:
    return "k_proj.bias" in name


def load_script():
    """scripts/train_ddp.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("train_ddp", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """Every launch the tests compare, once: name -> its output folder."""
    root = tmp_path_factory.mktemp("ddp")
    launches = {
        "fp64_1": (1, "--dtype", "fp64"),
        "fp64_2": (2, "--dtype", "fp64"),
        "fp32_1": (1,),
        "fp32_2": (2, "--ckpt-every", "5"),
    }
    for name, (nproc, *extra) in launches.items():
        succeeded(torchrun(nproc, root / name, *extra))
    return {name: root / name for name in launches}


def test_the_ranks_hold_different_numbers_of_tokens():
    """Otherwise a per-rank mean would be right by luck and the next test would prove less."""
    script, lang = load_script(), ToyLanguage()
    for step in range(STEPS):
        sentences = lang.sample(GLOBAL_BATCH, seed=script.batch_seed(SEED, step))
        half = GLOBAL_BATCH // 2
        tokens = [sum(len(s) + 1 for s in part) for part in (sentences[:half], sentences[half:])]
        if tokens[0] != tokens[1]:
            return
    pytest.fail("every batch splits into halves with equal token counts")


def test_two_processes_give_the_weights_of_one(runs):
    # In float64 every weight agrees: the same gradients, summed in another order.
    exact = max_diff(weights(runs["fp64_1"]), weights(runs["fp64_2"]))
    print(f"\nfloat64, 1 vs 2 processes: max |diff| of all weights = {exact:.2e}")
    assert exact <= 1e-9  # measured ~1e-12; per-rank means give ~3e-2
    # In float32 too, except the key biases: their gradient is zero in exact arithmetic (a
    # constant added to a row of scores changes no softmax), so what is computed is rounding
    # noise, which Adam scales up to steps of a sizeable fraction of the learning rate
    # (Chapter 5). They change nothing the model computes, as the logits show.
    one, two = weights(runs["fp32_1"]), weights(runs["fp32_2"])
    other = max_diff(one, two, skip=is_key_bias)
    key_bias = max_diff(one, two, skip=lambda name: not is_key_bias(name))
    print(f"float32, 1 vs 2 processes: max |diff| = {other:.2e} (key biases: {key_bias:.2e})")
    assert other <= 1e-5

    for name in ("fp32_1", "fp32_2", "fp64_1", "fp64_2"):
        result = json.loads((runs[name] / "result.json").read_text())
        assert result["world_size"] == int(name[-1]) and result["steps"] == STEPS
        assert result["global_batch"] == GLOBAL_BATCH
        assert result["val_over_limit"] > 1 and result["tokens_per_s"] > 0
    losses = [json.loads((runs[n] / "result.json").read_text())["final_train_loss"] for n in runs]
    assert max(losses) - min(losses) < 1e-4, losses


def test_logits_agree_despite_the_key_biases(runs):
    """The float32 models of one and two processes compute the same function."""
    script = load_script()
    args = script.parse_args([*TINY, "--out", str(runs["fp32_1"])])
    lang = ToyLanguage()
    vocab = script.Vocab(lang.words)
    probe = vocab.batch(lang.sample(64, seed=12345), bos=True, eos=True)[:, :-1]
    logits = []
    for name in ("fp32_1", "fp32_2"):
        model = script.build_model(len(vocab), args)
        model.load_state_dict(weights(runs[name]))
        with torch.no_grad():
            logits.append(model(probe).log_softmax(-1))
    gap = (logits[0] - logits[1]).abs().max().item()
    print(f"\nfloat32, 1 vs 2 processes: max |diff| of log-probabilities = {gap:.2e}")
    assert gap <= 1e-5


def test_a_restarted_run_resumes_and_ends_where_an_uninterrupted_one_does(runs, tmp_path):
    # Every rank exits after the checkpoint of step 5; torchrun starts them again, and the
    # script finds OUT/checkpoint.pt and continues from it (not from step 0).
    first, other = tmp_path / "restarted", tmp_path / "elsewhere"
    restarted = torchrun(2, first, "--ckpt-every", "0", "--kill-after-step", "5", restarts=1)
    succeeded(restarted)
    assert "exiting with status" in restarted.stdout  # it did die once
    result = json.loads((first / "result.json").read_text())
    assert result["resumed_from_step"] == 5 and result["tokens_per_s"] > 0
    gap = max_diff(weights(first), weights(runs["fp32_2"]))
    print(f"\nkilled after step 5, restarted vs uninterrupted: max |diff| = {gap:.2e}")
    assert gap <= 1e-7  # the same number of processes: the same sums, the same weights

    # --resume DIR: the step-5 checkpoint continued elsewhere, by one process instead of
    # two: the same gradients summed in another order, so equal up to rounding.
    succeeded(torchrun(1, other, "--resume", str(first)))
    assert json.loads((other / "result.json").read_text())["resumed_from_step"] == 5
    one = weights(other)
    gap = max_diff(one, weights(runs["fp32_2"]), skip=is_key_bias)
    print(f"resumed by 1 process instead of 2: max |diff| (key biases aside) = {gap:.2e}")
    assert gap <= 1e-5


def test_a_checkpoint_of_other_settings_is_refused(runs, tmp_path, capsys, monkeypatch):
    """Continuing runs.fp32_2's float32 checkpoint in float64 stops with a message.

    The script runs in this process, as one rank without torchrun (a group of one).
    """
    monkeypatch.delenv("RANK", raising=False)
    script = load_script()
    argv = [*TINY, "--dtype", "fp64", "--resume", str(runs["fp32_2"]), "--out", str(tmp_path)]
    try:
        with pytest.raises(SystemExit) as stop:
            script.main(argv)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert "was made with other settings" in error and "'dtype': ('fp32', 'fp64')" in error


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--global-batch", "0"], "--global-batch must be a positive number of sentences"),
        (["--global-batch", "7"], "--global-batch 7 is not divisible by the world size 2"),
        (["--log-every", "0"], "--log-every must be at least 1, got 0"),
        (["--ckpt-every", "-1"], "--ckpt-every must be at least 1 (or 0: never), got -1"),
    ],
)
def test_bad_arguments_stop_every_rank_with_a_message(flags, message, tmp_path, capsys):
    """check_launch runs on every rank before any collective: each one says why it stops."""
    script = load_script()
    args = script.parse_args([*TINY, "--out", str(tmp_path), *flags])
    for rank in (0, 1):
        with pytest.raises(SystemExit) as stop:
            script.check_launch(args, rank, world=2)
        assert stop.value.code == 2
        assert f"[rank {rank}] error: {message}" in capsys.readouterr().err


def test_a_global_batch_the_world_size_does_not_divide_fails_clearly(tmp_path):
    start = time.perf_counter()
    run = torchrun(2, tmp_path, "--global-batch", "7")
    print(f"\na bad launch failed after {time.perf_counter() - start:.1f} s")
    assert run.returncode != 0
    message = "error: --global-batch 7 is not divisible by the world size 2"
    assert message in run.stderr, run.stderr[-3000:]
    for rank in (0, 1):
        # Every rank checks before any collective and says why it stops; torchrun ends the
        # launch when the first rank fails, so a slower rank may be stopped (SIGTERM) first.
        stopped = re.search(rf"rank\s*: {rank} .*\n\s*exitcode\s*: -15", run.stderr)
        assert f"[rank {rank}] {message}" in run.stderr or stopped, run.stderr[-3000:]
