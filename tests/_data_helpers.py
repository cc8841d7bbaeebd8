"""Shared helpers for the tests/test_data_*.py files (the real ARC files, a tiny built dataset)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np

from trm_core.data.build import build_dataset

ARC_DIR = Path(__file__).parent.parent / "data" / "arc"
ARC_PREFIX = str(ARC_DIR / "arc-agi")
BAD_DIR = Path(__file__).parent / "fixtures" / "bad_tasks"


def build_small(out: Path, **kwargs) -> dict:
    """manual_evaluation (23 real tasks) with 4 augmentations: a full build in well under a second."""
    args = dict(input_file_prefix=ARC_PREFIX, output_dir=out, subsets=["manual_evaluation"], num_aug=4,
                progress=False)
    return build_dataset(**(args | kwargs))


def write_subset(prefix: Path, subset: str, source: str, n: int, with_solutions: bool = True) -> None:
    """Copy the first n tasks of a shipped subset to `{prefix}_{subset}_*.json` (plain JSON)."""
    ch = json.load(gzip.open(ARC_DIR / f"arc-agi_{source}_challenges.json.gz"))
    ids = list(ch)[:n]
    Path(f"{prefix}_{subset}_challenges.json").write_text(json.dumps({i: ch[i] for i in ids}))
    if with_solutions:
        sol = json.load(gzip.open(ARC_DIR / f"arc-agi_{source}_solutions.json.gz"))
        Path(f"{prefix}_{subset}_solutions.json").write_text(json.dumps({i: sol[i] for i in ids}))


def load_split(out: Path, split: str) -> dict[str, np.ndarray]:
    return {name: np.load(out / split / f"all__{name}.npy")
            for name in ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")}
