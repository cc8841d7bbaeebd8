"""Voting speed: trm_core.voting.vote vs a per-row re-implementation of upstream's evaluator loop.

    python bench/bench_voting.py                     # small (seconds) and ARC-AGI-2-sized (~172k rows)
    python bench/bench_voting.py --sizes small --json /tmp/voting.json

Prints a Markdown table (rows, ours and the reference in predictions per second, speed-up) and the hardware
line, and writes bench/results/voting.json (schema `trm_core.bench/1`, see bench/_common.py).

Predictions are synthetic but shaped like an ARC-AGI-2 evaluation: the 120 public evaluation tasks (172 test
inputs), N augmentations per task (dihedral + colour map, upstream's names), one row per augmented test input.
Each row's prediction is the forward-augmented true output (40%), one of 5 near misses (45%), a random grid
(13%) or an empty crop (2%); q_halt logits are random. Both implementations must rank every test input's
candidates identically (checked) before their times are compared.

The reference follows upstream `evaluators/arc.py` (`update_batch` + `result`): per row, crop at EOS, parse the
puzzle name, invert the augmentation, sha256 the input and the prediction, append to a dict of lists; then per
test input count votes and sort by (count, mean q). Upstream crops with a numba kernel (about a microsecond a
row); numba is not a dependency here, so each row is cropped with numpy (`crop_tokens_batch` on one row), which
is much slower. The crop is therefore timed apart: `speedup` counts it, `speedup_vs_free_crop` gives the
reference its crops for free (a lower bound on the speed-up over upstream with numba).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time

import _common  # noqa: F401  (puts the repo on sys.path)
import numpy as np
from _common import REPO, finish, record

from trm_core.data.arc import load_challenges_json
from trm_core.data.augment import (apply_aug, aug_name, crop_tokens_batch, grid_to_tokens,
                                   inverse_dihedral_transform, random_colour_perm)
from trm_core.voting import vote

DATA = REPO / "data" / "arc"
SIZES = {"small": 10, "arc2": 1000}  # augmentations per task


def make_predictions(num_aug: int, seed: int = 0):
    """Synthetic eval predictions: (inputs, preds, puzzle_ids, q_halt, identifiers, test_inputs)."""
    rng = np.random.default_rng(seed)
    chal = load_challenges_json(DATA / "arc-agi_evaluation2_challenges.json.gz")
    sols = load_challenges_json(DATA / "arc-agi_evaluation2_solutions.json.gz")
    identifiers = ["<blank>"]
    inputs, preds, pids = [], [], []
    test_inputs = {}
    empty = np.zeros(900, np.uint8)
    for task_id, task in chal.items():
        tins = [np.array(p["input"], np.uint8) for p in task["test"]]
        test_inputs[task_id] = [p["input"] for p in task["test"]]
        outs = [np.array(o, np.uint8) for o in sols[task_id]]
        near = []
        for out in outs:  # 5 near misses per output: one cell recoloured
            variants = []
            for _ in range(5):
                v = out.copy()
                r, c = rng.integers(out.shape[0]), rng.integers(out.shape[1])
                v[r, c] = (v[r, c] + 1 + rng.integers(9)) % 10
                variants.append(v)
            near.append(variants)
        for a in range(num_aug + 1):
            if a == 0:
                tid, perm = 0, np.arange(10, dtype=np.uint8)  # the original comes first, as in the dataset
            else:
                tid, perm = int(rng.integers(8)), random_colour_perm(rng)
            identifiers.append(aug_name(task_id, tid, perm))
            pid = len(identifiers) - 1
            for i, tin in enumerate(tins):
                u = rng.random()
                if u < 0.40:
                    pred = outs[i]
                elif u < 0.85:
                    pred = near[i][int(rng.integers(5))]
                elif u < 0.98:
                    h, w = rng.integers(1, 31, size=2)
                    pred = rng.integers(0, 10, size=(h, w)).astype(np.uint8)
                else:
                    pred = None
                inputs.append(grid_to_tokens(apply_aug(tin, tid, perm)))
                preds.append(empty if pred is None else grid_to_tokens(apply_aug(pred, tid, perm)))
                pids.append(pid)
    q = rng.normal(size=len(pids)).astype(np.float32)
    return np.stack(inputs), np.stack(preds), np.array(pids, np.int32), q, identifiers, test_inputs


# --- the per-row reference (upstream's loop, re-implemented) -----------------------------------------------

def _crop(row: np.ndarray) -> np.ndarray:
    h, w = crop_tokens_batch(row[None])
    return (row.reshape(30, 30)[: h[0], : w[0]].astype(np.int64) - 2).astype(np.uint8)


def _grid_hash(grid: np.ndarray) -> str:
    return hashlib.sha256(bytes([grid.shape[0], grid.shape[1]]) + grid.tobytes()).hexdigest()


def _inverse_aug(name: str):
    if "|||" not in name:
        return name, lambda g: g
    task_id, t, perm = name.split("|||")
    tid, inv_perm = int(t[1:]), np.argsort(np.array([int(c) for c in perm], np.uint8)).astype(np.uint8)
    return task_id, lambda g: inv_perm[inverse_dihedral_transform(g, tid)]


def reference_crops(inputs, preds):
    """Upstream's per-row `_crop` of every input and prediction (the reference's first step)."""
    return [_crop(row) for row in inputs], [_crop(row) for row in preds]


def reference_vote(inputs, preds, pids, q_halt, identifiers, test_inputs, crops=None):
    """Upstream's per-row evaluator: {(task, test index): [(grid, votes, mean_q), ...] best first}.

    `crops` (from `reference_crops`) lets the crop be timed apart: upstream's is a compiled numba kernel.
    """
    in_crops, pred_crops = crops if crops is not None else reference_crops(inputs, preds)
    q = 1.0 / (1.0 + np.exp(-q_halt.astype(np.float64)))
    hmap: dict[str, np.ndarray] = {}
    votes: dict[str, dict[str, list]] = {}
    for i in range(len(pids)):
        if pids[i] == 0:
            continue
        task_id, inv = _inverse_aug(identifiers[pids[i]])
        input_hash = _grid_hash(inv(in_crops[i]))
        pred = inv(pred_crops[i])
        if pred.size == 0:  # trm_core drops empty crops (upstream keeps them as [] grids)
            continue
        pred_hash = _grid_hash(pred)
        hmap[pred_hash] = pred
        votes.setdefault(task_id, {}).setdefault(input_hash, []).append((pred_hash, q[i]))
    out = {}
    for task_id, grids in test_inputs.items():
        for i, grid in enumerate(grids):
            counts: dict[str, list] = {}
            for h, qi in votes.get(task_id, {}).get(_grid_hash(np.array(grid, np.uint8)), []):
                counts.setdefault(h, [0, 0.0])
                counts[h][0] += 1
                counts[h][1] += qi
            ranked = sorted(((h, c, s / c) for h, (c, s) in counts.items()), key=lambda x: (x[1], x[2]), reverse=True)
            out[(task_id, i)] = [(hmap[h], c, m) for h, c, m in ranked]
    return out


def run(size: str, repeats: int) -> dict:
    t = time.perf_counter()
    inputs, preds, pids, q, identifiers, test_inputs = make_predictions(SIZES[size])
    gen_s = time.perf_counter() - t
    ours_s = min(_timed(lambda: vote(inputs, preds, pids, q, identifiers, test_inputs))[0] for _ in range(repeats))
    ours = vote(inputs, preds, pids, q, identifiers, test_inputs)
    crop_s, crops = _timed(lambda: reference_crops(inputs, preds))
    loop_s, ref = _timed(lambda: reference_vote(inputs, preds, pids, q, identifiers, test_inputs, crops))
    for key, cands in ref.items():  # same candidates, same order, same votes
        mine = ours[key]
        assert len(mine) == len(cands), key
        for c, (g, v, m) in zip(mine, cands):
            assert c.votes == v and np.array_equal(c.grid, g) and abs(c.mean_q - m) < 1e-9, key
    n = len(pids)
    return {"size": size, "augmentations": SIZES[size], "rows": n, "test_inputs": len(ours),
            "ours_s": ours_s, "reference_s": crop_s + loop_s, "reference_crop_s": crop_s,
            "ours_preds_per_s": n / ours_s, "reference_preds_per_s": n / (crop_s + loop_s),
            "reference_free_crop_preds_per_s": n / loop_s, "speedup": (crop_s + loop_s) / ours_s,
            "speedup_vs_free_crop": loop_s / ours_s, "generate_s": gen_s}


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


COLUMNS = ["size", "augmentations", "rows", "ours_preds_per_s", "reference_preds_per_s", "speedup",
           "reference_free_crop_preds_per_s", "speedup_vs_free_crop"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="small,arc2", help=f"comma-separated, from {sorted(SIZES)}")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of ours (the best is kept)")
    p.add_argument("--json", default=None, help="where to write the results (default bench/results/voting.json)")
    args = p.parse_args(argv)
    rec = record(argv)
    rows = [run(s, args.repeats) for s in args.sizes.split(",")]
    finish("voting", rec, rows, COLUMNS, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
