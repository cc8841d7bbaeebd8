"""Shared test setup: one torch thread (2-core CI machines collapse with more), tiny model configs, shipped data."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parent.parent
ARC_DIR = REPO / "data" / "arc"


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
