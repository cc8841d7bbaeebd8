"""Shared test setup: one torch thread (2-core CI machines collapse with more), tiny model configs, shipped data."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parent.parent
ARC_DIR = REPO / "data" / "arc"
# Repo tooling lives beside its shell scripts, outside the package: importable by the tests.
for _tools in ("scripts", "wheels"):
    if str(REPO / _tools) not in sys.path:
        sys.path.insert(0, str(REPO / _tools))


def tiny_arch(**overrides):
    """A TRM small enough for CPU tests in milliseconds."""
    from trm_core.config import ArchConfig

    base = dict(hidden_size=32, num_heads=2, L_layers=1, H_cycles=2, L_cycles=2, seq_len=16, puzzle_emb_ndim=32,
                puzzle_emb_len=1, num_puzzle_identifiers=8, halt_max_steps=3, forward_dtype="float32")
    base.update(overrides)
    return ArchConfig(**base)


@pytest.fixture
def arc_dir() -> Path:
    return ARC_DIR


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def write_small_task_files(folder: Path, n_tasks: int = 6, max_side: int = 8, source: str = "training2") -> tuple[Path, Path]:
    """Write the first `n_tasks` real ARC tasks of `source` whose grids all fit in max_side x max_side."""
    import json

    from trm_core.data.arc import load_challenges_json

    chal = load_challenges_json(ARC_DIR / f"arc-agi_{source}_challenges.json.gz")
    sols = load_challenges_json(ARC_DIR / f"arc-agi_{source}_solutions.json.gz")

    def fits(g):
        return len(g) <= max_side and len(g[0]) <= max_side

    picked = {}
    for tid, task in chal.items():
        grids = [p["input"] for p in task["train"] + task["test"]] + [p["output"] for p in task["train"]] + sols[tid]
        if all(fits(g) for g in grids):
            picked[tid] = task
        if len(picked) == n_tasks:
            break
    folder.mkdir(parents=True, exist_ok=True)
    ch, so = folder / "arc-agi_small_challenges.json", folder / "arc-agi_small_solutions.json"
    ch.write_text(json.dumps(picked))
    so.write_text(json.dumps({t: sols[t] for t in picked}))
    return ch, so


def build_small_dataset(out: Path, n_tasks: int = 6, num_aug: int = 3, canvas: int = 10) -> Path:
    """A real-task dataset small enough for seconds of CPU training (canvas 10x10)."""
    from trm_core.data.build import build_dataset

    ch, so = write_small_task_files(out.parent / f"{out.name}_src", n_tasks=n_tasks, max_side=canvas - 1)
    build_dataset(None, out, ["small"], test_set_names=["small"], num_aug=num_aug, seed=0, canvas_size=canvas,
                  progress=False, sources=[("small", ch, so)])
    return out


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> Path:
    return build_small_dataset(tmp_path_factory.mktemp("data") / "small")
