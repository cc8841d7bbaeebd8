"""The ARC dataset builder: task files -> augmented token arrays in upstream TRM's on-disk layout.

    # ARC-AGI-2 as in the TRM paper (1280 tasks, ~5.2M train rows, ~9.6 GB on disk)
    trm build-data --input-file-prefix data/arc/arc-agi --subsets training2 evaluation2 concept \\
        --test-set-name evaluation2 --num-aug 1000 --output-dir data/built/arc2concept-aug-1000
    # the Kaggle hidden test file (no solutions: test labels are dummies, all test pairs go to test/)
    python -m trm_core.data.build --challenges /kaggle/input/<slug>/arc-agi_test_challenges.json \\
        --num-aug 1000 --skip-invalid --output-dir /kaggle/working/data/test-aug-1000

Output (as upstream, so data built by either tool loads in the other):
`{train,test}/all__{inputs,labels,puzzle_identifiers,puzzle_indices,group_indices}.npy`, `{train,test}/dataset.json`
(plus `canvas_size`), `identifiers.json` (index = puzzle identifier, `<blank>` below the start) and
`test_puzzles.json` (the tasks whose test pairs are in `test/`, outputs `[[0]]` where unknown).

Routing (the Trelis fork's rules): train pairs always go to train/. A task's test pairs go to test/ when its subset
is a test set (or when no test set is named), to train/ otherwise, and always to train/ for `--train-only-subsets`.
Each task gets its original plus up to `num_aug` distinct augmentations (dihedral transform + colour permutation,
de-duplicated on the augmented grids, at most 5 * num_aug trials); train/ rows are randomly translated on the
canvas except one pair per puzzle, which stays at (0, 0).

How it differs from upstream, on purpose:
- Two passes and streaming: pass 1 decides every augmentation (a few bytes per puzzle), pass 2 encodes one task
  at a time, in chunks of at most `chunk_rows` rows, and appends them to the .npy files. Peak memory does not grow
  with `num_aug` (upstream holds every augmented grid as a Python object: > 10 GB for ARC-AGI-2).
- Randomness comes from `np.random.Generator`s keyed by (seed, subset, task id), so the same flags give
  byte-identical files and a task's augmentations do not depend on the other tasks in the mix. Upstream's legacy
  global-RNG stream (and so its exact identifiers.json) is not reproduced; subsets are not shuffled.
- Identifiers are allocated per task in file order; a task id repeated across subsets gets its own block.
- Test pairs without a known solution are not put in train/ (upstream would train on the dummy `[[0]]` labels).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trm_core.data.arc import Task, find_task_files, load_tasks
from trm_core.data.augment import (COLOR_OFFSET, EOS, PAD, SWAPS_AXES, VOCAB_SIZE, aug_name, dihedral_transform,
                                   grid_to_tokens)
from trm_core.utils import Progress

RETRIES_FACTOR = 5  # upstream: at most 5 * num_aug trials per task
DUMMY_OUTPUT = np.zeros((1, 1), dtype=np.uint8)  # upstream's label for a test input without a solution
_KEY_BUDGET = 1 << 24  # bytes of dedup keys built per batch of trials


@dataclass
class _Plan:
    """Everything pass 2 needs for one task; the augmentations cost 11 bytes per puzzle."""

    subset: str
    task: Task
    train_pairs: list[tuple[np.ndarray, np.ndarray]]
    test_pairs: list[tuple[np.ndarray, np.ndarray]]  # empty unless the task's test pairs go to test/
    tids: np.ndarray  # (K,) uint8, K = 1 + accepted augmentations; [0] is the original
    perms: np.ndarray  # (K, 10) uint8 colour maps
    first_id: int  # puzzle identifier of the original; augmentation k gets first_id + k


def _task_rng(seed: int, subset: str, task_id: str, stream: int) -> np.random.Generator:
    """Independent generator per (seed, subset, task, stream): no draw depends on any other task."""
    key = (zlib.crc32(subset.encode()), zlib.crc32(task_id.encode()), stream)
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


def plan_augmentations(grids: Sequence[np.ndarray], num_aug: int, rng: np.random.Generator,
                       colour_permutation: bool = True,
                       dihedral_first: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Choose up to `num_aug` augmentations whose augmented grids differ from each other and from the original.

    Returns (tids (K,), perms (K, 10)) with the original (0, identity) first. A trial's dedup key is every grid
    after the augmentation, with its shape, so two trials are duplicates exactly when they give the same task.
    With `colour_permutation=False` only the 8 dihedral transforms are used (identity colours), in order
    1..7, so a task has at most 7 augmented versions besides the original whatever `num_aug` asks. With
    `dihedral_first=True` those plain dihedral versions come first and random (transform, permutation) pairs
    fill the rest: tasks whose rule names colours keep versions that state it as given, while the permuted
    versions teach colour-blind rules (copy, tile, mirror); voting lets whichever group agrees win.
    """
    # Per transform, the concatenated [h+10, w+10, raster...] of all grids; shapes are offset by 10 so that
    # one 41-entry lookup can colour-map rasters (0..9) and leave shapes (11..40) alone.
    base_keys = np.stack([
        np.concatenate([np.concatenate([[g.shape[0] + 10, g.shape[1] + 10], g.reshape(-1)])
                        for g in (dihedral_transform(g, tid) for g in grids)])
        for tid in range(8)]).astype(np.uint8)  # (8, L)
    identity = np.arange(10, dtype=np.uint8)
    seen = {base_keys[0].tobytes()}
    tids, perms = [0], [identity]
    if dihedral_first or not colour_permutation:
        for tid in range(1, 8):
            key = base_keys[tid].tobytes()
            if len(tids) <= num_aug and key not in seen:
                seen.add(key)
                tids.append(tid)
                perms.append(identity)
        if not colour_permutation:
            return np.array(tids, dtype=np.uint8), np.stack(perms).astype(np.uint8)
    max_trials = RETRIES_FACTOR * num_aug
    # Most tasks need about num_aug trials; few-colour tasks run out of distinct ones and use more batches.
    batch = max(1, min(num_aug + 1, _KEY_BUDGET // base_keys.shape[1]))
    trials = 0
    shape_codes = np.arange(10, 41, dtype=np.uint8)
    while trials < max_trials and len(tids) <= num_aug:
        n = min(batch, max_trials - trials)
        t = rng.integers(0, 8, size=n)
        p = np.concatenate([np.zeros((n, 1), np.uint8),
                            1 + rng.permuted(np.tile(np.arange(9, dtype=np.uint8), (n, 1)), axis=1)], axis=1)
        lookup = np.concatenate([p, np.broadcast_to(shape_codes, (n, 31))], axis=1)  # (n, 41)
        keys = _lookup_rows(lookup, base_keys, t)  # (n, L)
        for i in range(n):
            key = keys[i].tobytes()
            if key not in seen:
                seen.add(key)
                tids.append(int(t[i]))
                perms.append(p[i])
                if len(tids) > num_aug:
                    break
        trials += n
    return np.array(tids, dtype=np.uint8), np.stack(perms).astype(np.uint8)


def _lookup_rows(tables: np.ndarray, bases: np.ndarray, which: np.ndarray) -> np.ndarray:
    """out[i] = tables[i][bases[which[i]]] for tables (n, T), bases (8, L), which (n,) in 0..7 -> (n, L).

    Grouped by transform so each group is one `take` along an axis: ~4x faster than a 2-D fancy index.
    """
    out = np.empty((len(which), bases.shape[1]), dtype=tables.dtype)
    for t in np.unique(which):
        rows = np.flatnonzero(which == t)
        out[rows] = np.take(tables[rows], bases[t], axis=1)
    return out


def _translate(canvases: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Shift each (canvas, canvas) image in (n, canvas, canvas) down/right by (rows[i], cols[i]), filling PAD.

    The images hold a grid at (0, 0) with its EOS marks; what is shifted past the border is exactly what
    upstream would not have written (an EOS row or column that would fall outside the canvas).
    """
    n, canvas, _ = canvases.shape
    padded = np.full((n, 2 * canvas, 2 * canvas), PAD, dtype=canvases.dtype)
    padded[:, canvas:, canvas:] = canvases
    windows = np.lib.stride_tricks.sliding_window_view(padded, (canvas, canvas), axis=(1, 2))
    return windows[np.arange(n), canvas - rows, canvas - cols]  # (n, canvas, canvas), a copy


def _encode_chunks(pairs: list[tuple[np.ndarray, np.ndarray]], tids: np.ndarray, perms: np.ndarray,
                   rng: np.random.Generator | None, canvas: int,
                   chunk_rows: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (inputs, labels) uint8 chunks (rows, canvas*canvas): puzzle-major, pairs in order within a puzzle.

    `rng` given = translate every pair but one random pair per puzzle (the train split); draws are made for the
    whole task up front, so the output does not depend on `chunk_rows`.
    """
    k_total, n_pairs, seq = len(tids), len(pairs), canvas * canvas
    # Token canvases of every pair under every transform at (0, 0); colours are mapped per puzzle below by a
    # token lookup (PAD and EOS map to themselves), which commutes with the geometry.
    bases = [[np.stack([grid_to_tokens(dihedral_transform(g, t), canvas) for t in range(8)]) for g in pair]
             for pair in pairs]  # [pair][in/out] -> (8, seq)
    token_maps = np.concatenate([np.tile(np.array([PAD, EOS], np.uint8), (k_total, 1)),
                                 perms + COLOR_OFFSET], axis=1)  # (K, VOCAB_SIZE)
    assert token_maps.shape[1] == VOCAB_SIZE
    offsets = None
    if rng is not None:
        keep = rng.integers(0, n_pairs, size=k_total)  # upstream's `no_aug_id`
        swaps = SWAPS_AXES[tids]
        offsets = []
        for p, (inp, out) in enumerate(pairs):
            h, w = max(inp.shape[0], out.shape[0]), max(inp.shape[1], out.shape[1])
            hmax, wmax = np.where(swaps, w, h), np.where(swaps, h, w)
            r = rng.integers(0, canvas - hmax + 1)
            c = rng.integers(0, canvas - wmax + 1)
            offsets.append((np.where(keep == p, 0, r), np.where(keep == p, 0, c)))
    per_chunk = max(1, chunk_rows // n_pairs)
    for k0 in range(0, k_total, per_chunk):
        ks = np.arange(k0, min(k0 + per_chunk, k_total))
        chunk = np.empty((2, len(ks), n_pairs, seq), dtype=np.uint8)  # (in/out, puzzle, pair, seq)
        for p in range(n_pairs):
            for io in range(2):
                tokens = _lookup_rows(token_maps[ks], bases[p][io], tids[ks])  # (n, seq)
                if offsets is not None:
                    r, c = offsets[p][0][ks], offsets[p][1][ks]
                    tokens = _translate(tokens.reshape(-1, canvas, canvas), r, c).reshape(-1, seq)
                chunk[io, :, p] = tokens
        yield chunk[0].reshape(-1, seq), chunk[1].reshape(-1, seq)


class _NpyAppender:
    """Write a 2-D uint8 .npy of known shape by appending row chunks (no memmap: its dirty pages count as RSS)."""

    def __init__(self, path: Path, rows: int, seq: int):
        self.path, self.rows, self.written = path, rows, 0
        self.file = open(path, "wb")
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
                  "shape": (rows, seq)}
        np.lib.format.write_array_header_1_0(self.file, header)

    def append(self, chunk: np.ndarray) -> None:
        self.file.write(np.ascontiguousarray(chunk, dtype=np.uint8).tobytes())
        self.written += len(chunk)

    def close(self) -> None:
        self.file.close()
        assert self.written == self.rows, (self.path, self.written, self.rows)


def _route(subsets: Sequence[str], test_set_names: Sequence[str], train_only: Sequence[str]) -> dict[str, str]:
    """Where each subset's test pairs go: "test" or "train" (the fork's rules)."""
    return {s: "train" if s in train_only else ("test" if not test_set_names or s in test_set_names else "train")
            for s in subsets}


def _sources(input_file_prefix: str | None, subsets: Sequence[str],
             sources: Sequence[tuple[str, Path, Path | None]] | None) -> list[tuple[str, Path, Path | None]]:
    if sources is not None:
        return [(s, Path(c), Path(p) if p is not None else None) for s, c, p in sources]
    if input_file_prefix is None:
        raise ValueError("give input_file_prefix (with subsets) or explicit sources")
    return [(s, *find_task_files(input_file_prefix, s)) for s in subsets]


def subset_name_of(challenges: str | Path) -> str:
    """`arc-agi_test_challenges.json[.gz]` -> `test` (the part between the first `_` and `_challenges`)."""
    stem = Path(challenges).name.split(".json")[0].removesuffix("_challenges")
    return stem.split("_", 1)[1] if "_" in stem else stem


def build_dataset(input_file_prefix: str | None, output_dir: str | Path, subsets: Sequence[str],
                  test_set_names: Sequence[str] = (), num_aug: int = 1000, seed: int = 42,
                  puzzle_identifiers_start: int = 1, train_only_subsets: Sequence[str] = (),
                  enable_train_translation: bool = True, canvas_size: int = 30, skip_invalid: bool = False,
                  chunk_rows: int = 16384, progress: bool = True,
                  sources: Sequence[tuple[str, Path, Path | None]] | None = None,
                  colour_permutation: bool = True, dihedral_first: bool = False) -> dict:
    """Build an augmented ARC dataset in upstream's layout under `output_dir` and return a summary dict.

    `sources`, a list of (subset name, challenges file, solutions file or None), replaces the lookup of
    `{input_file_prefix}_{subset}_challenges.json[.gz]` (the Kaggle runner points at one file directly).
    Tasks with a grid larger than `canvas_size` are skipped and listed in the summary's `problems`.
    `colour_permutation=False` augments with the dihedral transforms only (at most 8 versions of a task);
    `dihedral_first=True` puts the plain dihedral versions first, then random colour-permuted ones.
    """
    t_start = time.monotonic()
    if sources is not None:
        subsets = [s for s, _, _ in sources]
    subsets, test_set_names, train_only_subsets = list(subsets), list(test_set_names), list(train_only_subsets)
    if not subsets or len(set(subsets)) != len(subsets):
        raise ValueError(f"subsets must be a non-empty list without repeats, got {subsets}")
    for flag, names in (("test_set_names", test_set_names), ("train_only_subsets", train_only_subsets)):
        unknown = [n for n in names if n not in subsets]
        if unknown:
            raise ValueError(f"{flag} {unknown} are not among subsets {subsets}")
    if set(test_set_names) & set(train_only_subsets):
        raise ValueError(f"subsets {sorted(set(test_set_names) & set(train_only_subsets))} are both test sets "
                         f"and train-only")
    for name, value, low in (("num_aug", num_aug, 0), ("seed", seed, 0), ("canvas_size", canvas_size, 1),
                             ("puzzle_identifiers_start", puzzle_identifiers_start, 1), ("chunk_rows", chunk_rows, 1)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    route = _route(subsets, test_set_names, train_only_subsets)
    out = Path(output_dir)
    seq = canvas_size * canvas_size

    # Pass 1: load, route and decide every augmentation.
    loaded: list[tuple[str, Task]] = []
    problems: list[str] = []
    for subset, challenges, solutions in _sources(input_file_prefix, subsets, sources):
        tasks, bad = load_tasks(challenges, solutions, skip_invalid=skip_invalid)
        problems += bad
        for task in tasks.values():
            grids = [g for pair in task.train for g in pair] + task.test_inputs + (task.test_outputs or [])
            too_big = max(max(g.shape) for g in grids)
            if too_big > canvas_size:
                problems.append(f"{challenges.name}: task {task.task_id}: has a grid side of {too_big}, "
                                f"larger than the canvas ({canvas_size}); skipped")
            else:
                loaded.append((subset, task))
    plans: list[_Plan] = []
    next_id = puzzle_identifiers_start
    dropped_unsolved = 0
    bar = Progress(len(loaded), "planning augmentations", unit="task", enabled=progress)
    for subset, task in loaded:
        test_pairs = list(zip(task.test_inputs, task.test_outputs or [DUMMY_OUTPUT] * len(task.test_inputs)))
        train_pairs, to_test = list(task.train), []
        if route[subset] == "test":
            to_test = test_pairs
        elif task.test_outputs is not None:
            train_pairs += test_pairs
        else:
            dropped_unsolved += len(test_pairs)
        grids = [g for pair in train_pairs + to_test for g in pair]
        tids, perms = plan_augmentations(grids, num_aug, _task_rng(seed, subset, task.task_id, 0),
                                         colour_permutation, dihedral_first)
        plans.append(_Plan(subset, task, train_pairs, to_test, tids, perms, next_id))
        next_id += len(tids)
        bar.update()
    bar.close()
    num_identifiers = next_id

    # Pass 2: encode and append, one task (and at most chunk_rows rows) at a time.
    splits = {"train": [(p, p.train_pairs) for p in plans], "test": [(p, p.test_pairs) for p in plans if p.test_pairs]}
    total_rows = sum(len(p.tids) * len(pairs) for entries in splits.values() for p, pairs in entries)
    bar = Progress(total_rows, "writing rows", unit="row", enabled=progress)
    summary: dict = {"output_dir": str(out), "num_puzzle_identifiers": num_identifiers, "problems": problems,
                     "test_pairs_without_solution_dropped_from_train": dropped_unsolved}
    for split, entries in splits.items():
        (out / split).mkdir(parents=True, exist_ok=True)
        n_rows = sum(len(p.tids) * len(pairs) for p, pairs in entries)
        writers = [_NpyAppender(out / split / f"all__{name}.npy", n_rows, seq) for name in ("inputs", "labels")]
        puzzle_ids, puzzle_sizes, group_sizes = [], [], []
        for p, pairs in entries:
            rng = (_task_rng(seed, p.subset, p.task.task_id, 1)
                   if split == "train" and enable_train_translation else None)
            for inputs, labels in _encode_chunks(pairs, p.tids, p.perms, rng, canvas_size, chunk_rows):
                writers[0].append(inputs)
                writers[1].append(labels)
                bar.update(len(inputs))
            puzzle_ids.append(p.first_id + np.arange(len(p.tids), dtype=np.int32))
            puzzle_sizes.append(np.full(len(p.tids), len(pairs), dtype=np.int64))
            group_sizes.append(len(p.tids))
        for w in writers:
            w.close()
        sizes = np.concatenate(puzzle_sizes) if puzzle_sizes else np.zeros(0, np.int64)
        np.save(out / split / "all__puzzle_identifiers.npy",
                np.concatenate(puzzle_ids) if puzzle_ids else np.zeros(0, np.int32))
        np.save(out / split / "all__puzzle_indices.npy", np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32))
        np.save(out / split / "all__group_indices.npy", np.concatenate([[0], np.cumsum(group_sizes)]).astype(np.int32))
        metadata = {"pad_id": PAD, "ignore_label_id": PAD, "blank_identifier_id": 0, "vocab_size": VOCAB_SIZE,
                    "seq_len": seq, "num_puzzle_identifiers": num_identifiers, "total_groups": len(group_sizes),
                    "mean_puzzle_examples": float(n_rows / len(sizes)) if len(sizes) else 0.0,
                    "total_puzzles": int(len(sizes)), "sets": ["all"], "canvas_size": canvas_size}
        (out / split / "dataset.json").write_text(json.dumps(metadata))
        summary[split] = {"groups": len(group_sizes), "puzzles": int(len(sizes)), "examples": n_rows}
    bar.close()

    # identifiers.json (index = identifier) and test_puzzles.json, streamed one task at a time.
    with open(out / "identifiers.json", "w") as f:
        f.write("[" + ", ".join(['"<blank>"'] * puzzle_identifiers_start))
        for p in plans:
            names = [p.task.task_id] + [aug_name(p.task.task_id, int(t), q) for t, q in zip(p.tids[1:], p.perms[1:])]
            f.write(", " + ", ".join(json.dumps(n) for n in names))
        f.write("]")
    with open(out / "test_puzzles.json", "w") as f:
        f.write("{")
        for i, p in enumerate(q for q in plans if q.test_pairs):
            raw = {"train": [{"input": a.tolist(), "output": b.tolist()} for a, b in p.task.train],
                   "test": [{"input": a.tolist(), "output": b.tolist()} for a, b in p.test_pairs]}
            f.write((", " if i else "") + json.dumps(p.task.task_id) + ": " + json.dumps(raw))
        f.write("}")
    summary["seconds"] = round(time.monotonic() - t_start, 2)
    return summary


def build_tasks(tasks: dict, root: str | Path, num_aug: int, **build_kw) -> dict:
    """Build the test-time dataset of raw `tasks` (the Kaggle runner's): `root`/challenges.json (the builder's
    input, and a record of what was built) -> `root`/data, every task's test inputs in test/. Returns the
    summary of `build_dataset` (which takes `build_kw`)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "challenges.json").write_text(json.dumps(tasks))
    return build_dataset(None, root / "data", ["test"], test_set_names=["test"], num_aug=num_aug, skip_invalid=True,
                         sources=[("test", root / "challenges.json", None)], **build_kw)


def probe_build_costs(tasks: dict, root: str | Path, probe_tasks: int = 8, probe_aug: int = 8,
                      **build_kw) -> tuple[float, float]:
    """(seconds per task, seconds per task per augmentation) of `build_tasks` on this machine, from two timed
    builds of the first `probe_tasks` tasks (0 and `probe_aug` augmentations) under `root`, removed after.

    time = a x tasks + b x rows; the per-row cost is never taken under a quarter of the average (timing noise
    on a loaded machine), and one augmentation adds one version of each task's rows."""
    import shutil

    probe, times, rows = dict(list(tasks.items())[:probe_tasks]), [], []
    build_tasks(dict(list(probe.items())[:1]), root, 0, **{**build_kw, "progress": False})  # untimed: first calls
    shutil.rmtree(root)
    for aug in (0, probe_aug):
        t = time.monotonic()
        summary = build_tasks(probe, root, aug, **{**build_kw, "progress": False})
        shutil.rmtree(root)
        times.append(time.monotonic() - t)
        rows.append(summary["train"]["examples"] + summary["test"]["examples"])
    row_s = max((times[1] - times[0]) / max(1, rows[1] - rows[0]), 0.25 * times[1] / max(1, rows[1]))
    per_version = row_s * rows[0] / len(probe)  # the rows of one version of an average task
    return max(0.0, times[0] - row_s * rows[0]) / len(probe) + per_version, per_version


def main(argv: list[str] | None = None) -> int:
    """`trm build-data` / `python -m trm_core.data.build`."""
    parser = argparse.ArgumentParser(
        prog="trm build-data", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Build an augmented ARC dataset in upstream TRM's layout.\n\nexample:\n"
                    "  trm build-data --input-file-prefix data/arc/arc-agi --subsets training2 evaluation2 concept "
                    "--test-set-name evaluation2 --num-aug 1000 --output-dir data/built/arc2concept-aug-1000\n"
                    "  trm build-data --challenges /kaggle/input/SLUG/arc-agi_test_challenges.json --skip-invalid "
                    "--output-dir /kaggle/working/test-aug-1000")
    parser.add_argument("--input-file-prefix", help="reads {prefix}_{subset}_challenges.json[.gz] "
                        "(+ _solutions.json[.gz] if present), e.g. data/arc/arc-agi")
    parser.add_argument("--subsets", nargs="+", default=None,
                        help="subsets to read, e.g. training2 evaluation2 concept")
    parser.add_argument("--challenges", type=Path, help="build from this one challenges file instead "
                        "(subset name = the file name between the first '_' and '_challenges')")
    parser.add_argument("--solutions", type=Path, help="solutions file for --challenges (optional)")
    parser.add_argument("--output-dir", required=True, type=Path)
    parser.add_argument("--test-set-names", nargs="*", default=[], help="subsets whose test pairs go to test/ "
                        "(none named: every subset's test pairs go to test/)")
    parser.add_argument("--test-set-name", action="append", default=[], help="one test set (upstream's flag)")
    parser.add_argument("--test-set-name2", action="append", default=[], help="alias of --test-set-name")
    parser.add_argument("--train-only-subsets", nargs="*", default=[], help="subsets whose test pairs always go "
                        "to train/ (e.g. re-ARC)")
    parser.add_argument("--num-aug", type=int, default=1000, help="augmented puzzles per task besides the original")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--puzzle-identifiers-start", type=int, default=1,
                        help="first puzzle identifier (> 1 to combine with another dataset; 0 is the blank)")
    parser.add_argument("--enable-train-translation", action=argparse.BooleanOptionalAction, default=True,
                        help="random placement of train/ pairs on the canvas")
    parser.add_argument("--canvas-size", type=int, default=30, help="canvas side; seq_len = canvas_size**2")
    parser.add_argument("--colour-permutation", action=argparse.BooleanOptionalAction, default=True,
                        help="permute colours 1-9 in augmentations (--no-colour-permutation: dihedral only, "
                             "at most 8 versions per task)")
    parser.add_argument("--dihedral-first", action="store_true",
                        help="the plain dihedral versions (original colours) first, then random colour permutations")
    parser.add_argument("--skip-invalid", action="store_true", help="report malformed tasks and skip them")
    parser.add_argument("--chunk-rows", type=int, default=16384, help="rows encoded at once (bounds memory)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    args = parser.parse_args(argv)

    sources = None
    if args.challenges is not None:
        if args.subsets or args.input_file_prefix:
            parser.error("--challenges replaces --input-file-prefix/--subsets; give one or the other")
        sources = [(subset_name_of(args.challenges), args.challenges, args.solutions)]
    elif not (args.input_file_prefix and args.subsets):
        parser.error("give --input-file-prefix and --subsets, or --challenges")
    test_names = list(dict.fromkeys(args.test_set_names + args.test_set_name + args.test_set_name2))
    try:
        summary = build_dataset(args.input_file_prefix, args.output_dir, args.subsets or [], test_names,
                                args.num_aug, args.seed, args.puzzle_identifiers_start, args.train_only_subsets,
                                args.enable_train_translation, args.canvas_size, args.skip_invalid,
                                args.chunk_rows, not args.no_progress, sources,
                                colour_permutation=args.colour_permutation, dihedral_first=args.dihedral_first)
    except ValueError as e:  # TaskError included: a bad flag or task file is the user's to fix, not a traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    for line in summary["problems"]:
        print(f"skipped: {line}", file=sys.stderr)
    print(json.dumps({k: v for k, v in summary.items() if k != "problems"} | {"problems": len(summary["problems"])}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
