"""Shared helpers of the benchmark scripts: the command line, the machine, timing, JSON.

Every script in this folder runs as ``python benchmarks/<name>.py [--quick] [--out DIR]``
(Python puts this folder first on the import path, so ``import common`` finds this file).
It measures everything it compares in one process, side by side, and writes one JSON file,
``<name>.json`` on the CPU or ``<name>-cuda.json`` when a CUDA GPU is there, whose
``"machine"`` record says what the numbers were measured on.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(description: str) -> argparse.Namespace:
    """``--quick`` (a few seconds: the smallest sizes, fewer repeats) and ``--out DIR``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--quick", action="store_true", help="smallest sizes and fewest repeats (a smoke test)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS,
        help=f"folder for the JSON result (default: {RESULTS})",
    )
    return parser.parse_args()


def pick_device() -> torch.device:
    """CUDA when there is a GPU, the CPU otherwise."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def synchronize(device: torch.device) -> None:
    """Wait for the GPU to finish what was queued (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_model() -> str:
    """The CPU's marketing name, from /proc/cpuinfo on Linux, else from ``platform``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine(device: torch.device) -> dict:
    """What the numbers were measured on."""
    record = {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device.type,
        "device_name": cpu_model(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        # Runnable processes averaged over the last minute, at the end of the run: above
        # the core count, other work was competing for the processor and timings suffer.
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        record["device_name"] = torch.cuda.get_device_name(device)
        record["cuda"] = torch.version.cuda
    return record


def measure(
    fn: Callable[[], object],
    device: torch.device,
    *,
    repeats: int = 5,
    warmup: int = 1,
    min_time: float = 0.02,
    budget: float = 30.0,
) -> dict:
    """Time ``fn()``: warm up, then the median of ``repeats`` timed rounds.

    A round calls ``fn`` ``number`` times, with ``number`` chosen so a round lasts at least
    ``min_time`` seconds (a tiny operation is timed over many calls, not one; a call that
    takes longer than that is a round by itself, the first one). Rounds stop early, after at
    least one, once ``budget`` seconds have been spent. The GPU is
    synchronised before and after every round. Returns seconds per call: ``median_s``,
    ``min_s``, all ``rounds_s``, and ``number`` (calls per round).
    """
    for _ in range(warmup):
        fn()
    # One call tells how many make a round of at least min_time; a long call is a round.
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    once = time.perf_counter() - start
    if once >= min_time:
        number, rounds, spent = 1, [once], once
    else:
        number, rounds, spent = int(min_time / max(once, 1e-9)) + 1, [], 0.0

    while len(rounds) < repeats and spent < budget:
        synchronize(device)
        start = time.perf_counter()
        for _ in range(number):
            fn()
        synchronize(device)
        elapsed = time.perf_counter() - start
        spent += elapsed
        rounds.append(elapsed / number)
    return {
        "median_s": statistics.median(rounds),
        "min_s": min(rounds),
        "rounds_s": rounds,
        "number": number,
    }


def result_path(name: str, out_dir: Path, device: torch.device) -> Path:
    """``out_dir/<name>.json``, or ``out_dir/<name>-cuda.json`` for GPU measurements."""
    suffix = "-cuda" if device.type == "cuda" else ""
    return Path(out_dir) / f"{name}{suffix}.json"


def write_json(name: str, payload: dict, out_dir: Path, device: torch.device) -> Path:
    """Write ``{"benchmark": name, "machine": ..., **payload}`` and return the path.

    The file is written next to its final name and then renamed, so an interrupted run
    never leaves half a JSON file behind.
    """
    record = {"benchmark": name, "machine": machine(device), **payload}
    path = result_path(name, out_dir, device)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)
    print(f"wrote {path}")
    return path


def log(message: str) -> None:
    """Progress on stdout, flushed at once (long runs show where they are)."""
    print(message, flush=True)
