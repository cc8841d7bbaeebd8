"""The ARC dataset builder: task files -> augmented token arrays in upstream TRM's on-disk layout.

    # ARC-AGI-2 as in the TRM paper (1280 tasks, ~5.2M train rows, ~9.6 GB on disk): upstream's exact dataset
    trm build-data --input-file-prefix data/arc/arc-agi --subsets training2 evaluation2 concept \\
        --test-set-name evaluation2 --num-aug 1000 --output-dir data/built/arc2concept-aug-1000
    # the Kaggle hidden test file (no solutions: test labels are dummies, all test pairs go to test/)
    python -m trm_core.data.build --challenges /kaggle/input/<slug>/arc-agi_test_challenges.json \\
        --num-aug 1000 --skip-invalid --output-dir /kaggle/working/data/test-aug-1000

Output, byte for byte what upstream's `dataset/build_arc_dataset.py` writes from the same files and flags (the
default `--rng-scheme upstream`): `{train,test}/all__{inputs,labels,puzzle_identifiers,puzzle_indices,
group_indices}.npy`, `{train,test}/dataset.json`, `identifiers.json` (index = puzzle identifier, `<blank>` below
the start) and `test_puzzles.json` (the tasks whose test pairs are in `test/`, outputs `[[0]]` where unknown).
A published checkpoint's puzzle-embedding rows are indexed by these identifiers, so this is what makes its
numbers reproducible here.

Routing (upstream's, plus the Trelis fork's flags): train pairs always go to train/. A task's test pairs go to
test/ when its subset is a test set (or when no test set is named), to train/ otherwise, and always to train/
for `--train-only-subsets`. Each task gets its original plus up to `num_aug` distinct augmentations (dihedral
transform + colour permutation; a trial is dropped when the augmented task, as a multiset of (input, output)
pairs, equals one already kept; at most 5 * num_aug trials); train/ rows are randomly translated on the canvas
except one pair per puzzle, which stays at (0, 0).

Randomness (`rng_scheme`):
- "upstream" (default): numpy's legacy global RNG seeded with `seed`, consumed in upstream's order
  (`trm_core.data.legacy_rng`): per subset a shuffle of its tasks, per task the augmentation trials, then, split
  by split, per puzzle the untranslated pair and two offsets per translated pair. Identifiers are given in
  split order (train first), first come first served by name, as upstream.
- "per-task": one `np.random.Generator` per (seed, subset, task id), tasks in file order, identifiers in blocks
  per task: a task's augmentations do not depend on the other tasks in the mix. The previous default; its
  files are unchanged (except that dataset.json has no `canvas_size` at 30 and an empty test split is not written).

How it differs from upstream, on purpose: two passes and streaming. Pass 1 decides every augmentation (a few
bytes per puzzle), pass 2 encodes one task at a time, in chunks of at most `chunk_rows` rows, and appends them
to the .npy files, so peak memory does not grow with `num_aug` (upstream holds every augmented grid as a Python
object: > 10 GB for ARC-AGI-2). The legacy stream is replayed in bulk, so this costs no speed.

Where upstream's output is not a function of its flags, `split_order` decides: when the first subset sends its
test pairs to test/, upstream writes the splits in the iteration order of a Python set of ("train", "all") and
("test", "all"), i.e. by string hashing (random unless PYTHONHASHSEED is fixed); it decides the identifiers.
`trm build-data --split-order auto` follows Python's order when PYTHONHASHSEED is set, else puts train first.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trm_core.data.arc import Task, find_task_files, load_tasks
from trm_core.data.augment import (COLOR_OFFSET, EOS, PAD, SWAPS_AXES, VOCAB_SIZE, aug_name, dihedral_transform,
                                   grid_to_tokens)
from trm_core.data.legacy_rng import LegacyStream
from trm_core.utils import Progress

RETRIES_FACTOR = 5  # upstream: at most 5 * num_aug trials per task
DUMMY_OUTPUT = np.zeros((1, 1), dtype=np.uint8)  # upstream's label for a test input without a solution
_KEY_BUDGET = 1 << 24  # bytes of dedup keys built per batch of trials


RNG_SCHEMES = ("upstream", "per-task")
SPLITS = ("train", "test")


@dataclass
class _Plan:
    """Everything pass 2 needs for one task; the augmentations cost 11 bytes per puzzle."""

    subset: str
    task: Task
    train_pairs: list[tuple[np.ndarray, np.ndarray]]
    test_pairs: list[tuple[np.ndarray, np.ndarray]]  # empty unless the task's test pairs go to test/
    tids: np.ndarray  # (K,) uint8, K = 1 + accepted augmentations; [0] is the original
    perms: np.ndarray  # (K, 10) uint8 colour maps
    ids: np.ndarray | None = None  # (K,) puzzle identifiers, given once every plan is known
    test_json: str | None = None  # the task's test_puzzles.json entry (tasks whose test pairs go to test/)

    def names(self) -> list[str]:
        """Upstream's puzzle names: the task id, then `task|||t{k}|||{colour map}` per augmentation (what
        `augment.aug_name` writes, with the digits of all maps decoded at once: ~5x faster for 1.2M names)."""
        task_id = self.task.task_id
        digits = (self.perms[1:] + ord("0")).astype(np.uint8).tobytes().decode("ascii")
        prefix = f"{task_id}|||t"
        return [task_id] + [f"{prefix}{t}|||{digits[10 * i:10 * i + 10]}" for i, t in enumerate(self.tids[1:].tolist())]


def _task_rng(seed: int, subset: str, task_id: str, stream: int) -> np.random.Generator:
    """Independent generator per (seed, subset, task, stream): no draw depends on any other task."""
    key = (zlib.crc32(subset.encode()), zlib.crc32(task_id.encode()), stream)
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


def _base_keys(grids: Sequence[np.ndarray]) -> np.ndarray:
    """(8, L) uint8: per transform, the concatenated [h+10, w+10, raster...] of all grids.

    Shapes are offset by 10 so that one 41-entry lookup can colour-map rasters (0..9) and leave shapes (11..40)
    alone: `_lookup_rows(lookup, base_keys, tids)` is then every grid of a trial, shapes included.
    """
    rows = []
    for tid in range(8):
        parts = []
        for g in grids:
            t = dihedral_transform(g, tid)
            parts += [np.array([t.shape[0] + 10, t.shape[1] + 10], dtype=np.uint8), t.reshape(-1).astype(np.uint8)]
        rows.append(np.concatenate(parts))
    return np.stack(rows)


_SHAPE_CODES = np.arange(10, 41, dtype=np.uint8)


def _lookups(perms: np.ndarray) -> np.ndarray:
    """(n, 41) tables for `_lookup_rows`: colour c -> perms[c], shape codes 10..40 unchanged."""
    return np.concatenate([perms, np.broadcast_to(_SHAPE_CODES, (len(perms), 31))], axis=1)


def _dihedral_versions(base_keys: np.ndarray, seen: set, tids: list, perms: list, num_aug: int, key=None) -> None:
    """Add the plain dihedral versions (identity colours, transforms 1..7, in order) that are new."""
    identity = np.arange(10, dtype=np.uint8)
    for tid in range(1, 8):
        k = (key(base_keys[tid:tid + 1]) if key else base_keys[tid:tid + 1])[0].tobytes()
        if len(tids) <= num_aug and k not in seen:
            seen.add(k)
            tids.append(tid)
            perms.append(identity)


def _keep_new(keys: np.ndarray, t: np.ndarray, p: np.ndarray, seen: set, tids: list, perms: list,
              num_aug: int) -> None:
    """Keep the trials (transform t[i], permutation p[i]) whose key is new, in order, until 1 + num_aug are kept."""
    for i in range(len(keys)):
        if len(tids) > num_aug:
            return
        key = keys[i].tobytes()
        if key not in seen:
            seen.add(key)
            tids.append(int(t[i]))
            perms.append(p[i])


def plan_augmentations(grids: Sequence[np.ndarray], num_aug: int, rng: np.random.Generator,
                       colour_permutation: bool = True,
                       dihedral_first: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The per-task scheme: choose up to `num_aug` augmentations whose augmented grids differ from each other
    and from the original, drawing from `rng`.

    Returns (tids (K,), perms (K, 10)) with the original (0, identity) first. A trial's dedup key is every grid
    after the augmentation, with its shape, so two trials are duplicates exactly when they give the same task.
    With `colour_permutation=False` only the 8 dihedral transforms are used (identity colours), in order
    1..7, so a task has at most 7 augmented versions besides the original whatever `num_aug` asks. With
    `dihedral_first=True` those plain dihedral versions come first and random (transform, permutation) pairs
    fill the rest: tasks whose rule names colours keep versions that state it as given, while the permuted
    versions teach colour-blind rules (copy, tile, mirror); voting lets whichever group agrees win.
    """
    base_keys = _base_keys(grids)  # (8, L)
    identity = np.arange(10, dtype=np.uint8)
    seen = {base_keys[0].tobytes()}
    tids, perms = [0], [identity]
    if dihedral_first or not colour_permutation:
        _dihedral_versions(base_keys, seen, tids, perms, num_aug)
        if not colour_permutation:
            return np.array(tids, dtype=np.uint8), np.stack(perms).astype(np.uint8)
    max_trials = RETRIES_FACTOR * num_aug
    # Most tasks need about num_aug trials; few-colour tasks run out of distinct ones and use more batches.
    batch = max(1, min(num_aug + 1, _KEY_BUDGET // base_keys.shape[1]))
    trials = 0
    while trials < max_trials and len(tids) <= num_aug:
        n = min(batch, max_trials - trials)
        t = rng.integers(0, 8, size=n)
        p = np.concatenate([np.zeros((n, 1), np.uint8),
                            1 + rng.permuted(np.tile(np.arange(9, dtype=np.uint8), (n, 1)), axis=1)], axis=1)
        _keep_new(_lookup_rows(_lookups(p), base_keys, t), t, p, seen, tids, perms, num_aug)
        trials += n
    return np.array(tids, dtype=np.uint8), np.stack(perms).astype(np.uint8)


def _pair_signature(pair: tuple[np.ndarray, np.ndarray]) -> tuple:
    """What no augmentation changes about a pair: its grid sizes, the number of black cells and the sorted
    counts of the other colours, of input and output (a dihedral moves cells; a colour map fixing 0 relabels)."""
    def grid(g: np.ndarray) -> tuple:
        counts = np.bincount(g.reshape(-1), minlength=10)
        return g.size, int(counts[0]), tuple(sorted(counts[1:].tolist()))
    return grid(pair[0]) + grid(pair[1])


def _multiset_key(pairs: Sequence[tuple[np.ndarray, np.ndarray]]):
    """A function turning trial keys (n, L) (pairs in order) into keys equal exactly when the trials give the
    same multiset of (input, output) pairs: upstream's `puzzle_hash` sorts the pairs' hashes. None when the
    pair order already is canonical (most tasks).

    Two pairs can only match across augmentations if they have the same `_pair_signature`; pairs are grouped by
    signature and only groups of two or more are sorted (as fixed-size byte strings, equal signature meaning
    equal length). The key stays self-delimiting, hence exact.
    """
    lengths = [a.size + b.size + 4 for a, b in pairs]
    starts = np.concatenate([[0], np.cumsum(lengths)])
    classes: dict[tuple, list[int]] = {}
    for p, pair in enumerate(pairs):
        classes.setdefault(_pair_signature(pair), []).append(p)
    groups = [(lengths[members[0]], members) for _, members in sorted(classes.items())]
    if all(len(members) == 1 for _, members in groups):
        return None  # no two pairs can ever be swapped for one another
    order = np.concatenate([np.arange(starts[p], starts[p + 1]) for _, members in groups for p in members])
    grouped = np.array_equal(order, np.arange(starts[-1]))  # e.g. every pair in one group

    def key(keys: np.ndarray) -> np.ndarray:
        out = np.ascontiguousarray(keys if grouped else keys[:, order])  # pairs grouped by signature
        col = 0
        for length, members in groups:
            width = length * len(members)
            if len(members) > 1 and width == out.shape[1]:
                out.view(f"V{length}").sort(axis=1)  # (n, members) byte strings, sorted in place
            elif len(members) > 1:
                block = np.ascontiguousarray(out[:, col:col + width]).view(f"V{length}")
                block.sort(axis=1)
                out[:, col:col + width] = block.view(np.uint8)
            col += width
        return out

    return key


def plan_augmentations_upstream(pairs: Sequence[tuple[np.ndarray, np.ndarray]], num_aug: int,
                                stream: LegacyStream, colour_permutation: bool = True,
                                dihedral_first: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Upstream's augmentation loop (`convert_single_arc_puzzle`) on the legacy stream.

    Trial = `aug()` (a transform, then a permutation of colours 1..9); it is kept when the augmented task, as
    a multiset of (input, output) pairs over both splits, differs from the original and from every kept one;
    the loop stops at 1 + num_aug puzzles or after 5 * num_aug trials. Trials are drawn in batches of at most
    the number still needed, so no draw is made that upstream would not make. `pairs` are all the task's pairs
    (train/ then test/). Returns (tids (K,), perms (K, 10)) with the original first. `colour_permutation` and
    `dihedral_first` (no upstream equivalent) work as in `plan_augmentations`, drawing from the same stream.
    """
    base_keys = _base_keys([g for pair in pairs for g in pair])  # (8, L)
    canonical = _multiset_key(pairs)
    identity = np.arange(10, dtype=np.uint8)
    seen = {(canonical(base_keys[:1]) if canonical else base_keys[:1])[0].tobytes()}
    tids, perms = [0], [identity]
    if dihedral_first or not colour_permutation:
        _dihedral_versions(base_keys, seen, tids, perms, num_aug, canonical)
        if not colour_permutation:
            return np.array(tids, dtype=np.uint8), np.stack(perms).astype(np.uint8)
    max_trials = RETRIES_FACTOR * num_aug
    most = max(1, _KEY_BUDGET // base_keys.shape[1])
    trials = 0
    while trials < max_trials and len(tids) <= num_aug:
        n = min(num_aug + 1 - len(tids), max_trials - trials, most)
        t, p = stream.aug_trials(n)
        keys = _lookup_rows(_lookups(p), base_keys, t)  # (n, L)
        if canonical is not None:
            keys = canonical(keys)
        _keep_new(keys, t, p, seen, tids, perms, num_aug)  # n <= what is still needed: every trial is judged
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


def _free_space(pairs: list[tuple[np.ndarray, np.ndarray]], canvas: int) -> tuple[np.ndarray, np.ndarray]:
    """(2, P) rows and columns left free on the canvas by each pair, untransformed ([0]) and with a transform that
    swaps the axes ([1]): upstream draws its offsets from `randint(0, free + 1)`."""
    h = np.array([max(a.shape[0], b.shape[0]) for a, b in pairs])
    w = np.array([max(a.shape[1], b.shape[1]) for a, b in pairs])
    return canvas - np.stack([h, w]), canvas - np.stack([w, h])


def _offsets_per_task(pairs: list[tuple[np.ndarray, np.ndarray]], tids: np.ndarray, rng: np.random.Generator,
                      canvas: int) -> tuple[np.ndarray, np.ndarray]:
    """The per-task scheme's translation: every pair but one random pair per puzzle, drawn for the whole task
    up front (so the output does not depend on `chunk_rows`). Returns (K, P) rows and columns."""
    keep = rng.integers(0, len(pairs), size=len(tids))  # upstream's `no_aug_id`
    swaps = SWAPS_AXES[tids].astype(np.intp)
    free_r, free_c = (f[swaps] for f in _free_space(pairs, canvas))  # (K, P) each
    rows, cols = np.zeros_like(free_r), np.zeros_like(free_c)
    for p in range(len(pairs)):
        r = rng.integers(0, free_r[:, p] + 1)
        c = rng.integers(0, free_c[:, p] + 1)
        rows[:, p], cols[:, p] = np.where(keep == p, 0, r), np.where(keep == p, 0, c)
    return rows, cols


def _offsets_upstream(pairs: list[tuple[np.ndarray, np.ndarray]], tids: np.ndarray, stream: LegacyStream,
                      canvas: int, translate: bool) -> tuple[np.ndarray, np.ndarray] | None:
    """Upstream's draws while writing a task's puzzles: per puzzle `no_aug_id`, then (train/ with translation)
    the offsets of every other pair. The draws are made even when nothing is translated (test/), as upstream."""
    free_r, free_c = _free_space(pairs, canvas)
    _, rows, cols = stream.offsets(len(pairs), translate, free_r, free_c, SWAPS_AXES[tids].astype(np.intp))
    return (rows, cols) if translate else None


def _encode_chunks(pairs: list[tuple[np.ndarray, np.ndarray]], tids: np.ndarray, perms: np.ndarray,
                   offsets: tuple[np.ndarray, np.ndarray] | None, canvas: int,
                   chunk_rows: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (inputs, labels) uint8 chunks (rows, canvas*canvas): puzzle-major, pairs in order within a puzzle.

    `offsets` = (rows, cols), each (K, P): where pair p of puzzle k goes on the canvas (None: all at (0, 0)).
    """
    k_total, n_pairs, seq = len(tids), len(pairs), canvas * canvas
    # Token canvases of every pair under every transform at (0, 0); colours are mapped per puzzle below by a
    # token lookup (PAD and EOS map to themselves), which commutes with the geometry.
    bases = [[np.stack([grid_to_tokens(dihedral_transform(g, t), canvas) for t in range(8)]) for g in pair]
             for pair in pairs]  # [pair][in/out] -> (8, seq)
    token_maps = np.concatenate([np.tile(np.array([PAD, EOS], np.uint8), (k_total, 1)),
                                 perms + COLOR_OFFSET], axis=1)  # (K, VOCAB_SIZE)
    assert token_maps.shape[1] == VOCAB_SIZE
    per_chunk = max(1, chunk_rows // n_pairs)
    for k0 in range(0, k_total, per_chunk):
        ks = np.arange(k0, min(k0 + per_chunk, k_total))
        chunk = np.empty((2, len(ks), n_pairs, seq), dtype=np.uint8)  # (in/out, puzzle, pair, seq)
        for p in range(n_pairs):
            for io in range(2):
                tokens = _lookup_rows(token_maps[ks], bases[p][io], tids[ks])  # (n, seq)
                if offsets is not None:
                    r, c = offsets[0][ks, p], offsets[1][ks, p]
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


def python_set_split_order() -> tuple[str, str]:
    """The split order upstream gets when its first subset is a test set: the iteration order of
    `set([("train", "all"), ("test", "all")])` in this process (fixed by PYTHONHASHSEED and the Python version)."""
    return tuple(split for split, _ in set([("train", "all"), ("test", "all")]))  # type: ignore[return-value]


def _upstream_test_entry(task: Task) -> str:
    """The task's test_puzzles.json entry as upstream writes it: its challenges entry, untouched, with each test
    pair's `output` set from the solutions file, or set to `[[0]]` where neither file gives one."""
    raw = dict(task.raw)
    tests = [dict(pair) for pair in raw["test"]]
    if task.raw_solution is not None:
        for i, solution in enumerate(task.raw_solution):
            tests[i]["output"] = solution
    else:
        for pair in tests:
            pair.setdefault("output", [[0]])
    raw["test"] = tests
    return json.dumps(raw)


def _assign_identifiers(splits: dict[str, list[_Plan]], order: Sequence[str], start: int,
                        by_task: bool) -> tuple[int, list[tuple[_Plan, np.ndarray]]]:
    """Give every puzzle its identifier; returns (number of identifiers, the new names in id order as
    (plan, indices of its puzzles) runs).

    Upstream (`by_task=False`): splits in `order`, groups, puzzles; a name seen before keeps its id (a task
    repeated across subsets, whose original and any augmentation drawn twice share rows). Only tasks that
    occur more than once need names looked up. `by_task`: one block per plan, in plan order (per-task scheme).
    """
    next_id, runs = start, []
    if by_task:
        for plan in splits["train"]:
            plan.ids = next_id + np.arange(len(plan.tids), dtype=np.int32)
            runs.append((plan, np.arange(len(plan.tids))))
            next_id += len(plan.tids)
        return next_id, runs
    repeated = {t for t, n in Counter(p.task.task_id for p in splits["train"]).items() if n > 1}
    seen: dict[str, int] = {}
    for split in order:
        for plan in splits[split]:
            if plan.ids is not None:
                continue
            if plan.task.task_id not in repeated:
                plan.ids = next_id + np.arange(len(plan.tids), dtype=np.int32)
                runs.append((plan, np.arange(len(plan.tids))))
                next_id += len(plan.tids)
                continue
            ids, new = [], []
            for k, name in enumerate(plan.names()):
                if name not in seen:
                    seen[name] = next_id
                    new.append(k)
                    next_id += 1
                ids.append(seen[name])
            plan.ids = np.array(ids, dtype=np.int32)
            runs.append((plan, np.array(new, dtype=np.int64)))
    return next_id, runs


def _check_flags(subsets: list[str], test_set_names: list[str], train_only_subsets: list[str], rng_scheme: str,
                 split_order: Sequence[str], unsolved_test_pairs: str | None, values: dict) -> list[str]:
    """Raise ValueError on a bad flag; return warnings for flags upstream accepts but that are likely slips."""
    if not subsets or len(set(subsets)) != len(subsets):
        raise ValueError(f"subsets must be a non-empty list without repeats, got {subsets}")
    if rng_scheme not in RNG_SCHEMES:
        raise ValueError(f"rng_scheme must be one of {RNG_SCHEMES}, got {rng_scheme!r}")
    if sorted(split_order) != sorted(SPLITS):
        raise ValueError(f"split_order must order {SPLITS}, got {tuple(split_order)}")
    if unsolved_test_pairs not in (None, "train", "drop"):
        raise ValueError(f"unsolved_test_pairs must be 'train' or 'drop', got {unsolved_test_pairs!r}")
    unknown = [n for n in train_only_subsets if n not in subsets]
    if unknown:
        raise ValueError(f"train_only_subsets {unknown} are not among subsets {subsets}")
    if set(test_set_names) & set(train_only_subsets):
        raise ValueError(f"subsets {sorted(set(test_set_names) & set(train_only_subsets))} are both test sets "
                         f"and train-only")
    for name, (value, low) in values.items():
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    missing = [n for n in test_set_names if n not in subsets]
    if missing:  # upstream accepts it: every test pair then goes to train/ (or to the other test sets)
        return [f"test set(s) {missing} are not among subsets {subsets}: their test pairs are not in this build"]
    return []


def build_dataset(input_file_prefix: str | None, output_dir: str | Path, subsets: Sequence[str],
                  test_set_names: Sequence[str] = (), num_aug: int = 1000, seed: int = 42,
                  puzzle_identifiers_start: int = 1, train_only_subsets: Sequence[str] = (),
                  enable_train_translation: bool = True, canvas_size: int = 30, skip_invalid: bool = False,
                  chunk_rows: int = 16384, progress: bool = True,
                  sources: Sequence[tuple[str, Path, Path | None]] | None = None,
                  colour_permutation: bool = True, dihedral_first: bool = False, rng_scheme: str = "upstream",
                  split_order: Sequence[str] = SPLITS, unsolved_test_pairs: str | None = None) -> dict:
    """Build an augmented ARC dataset in upstream's layout under `output_dir` and return a summary dict.

    `sources`, a list of (subset name, challenges file, solutions file or None), replaces the lookup of
    `{input_file_prefix}_{subset}_challenges.json[.gz]` (the Kaggle runner points at one file directly).
    Tasks with a grid larger than `canvas_size` are skipped and listed in the summary's `problems`.
    `colour_permutation=False` augments with the dihedral transforms only (at most 8 versions of a task);
    `dihedral_first=True` puts the plain dihedral versions first, then random colour-permuted ones.
    `rng_scheme`: "upstream" (upstream's exact output) or "per-task" (see the module doc); `split_order`: the
    order splits are numbered and written in (upstream: train first unless its first subset is a test set).
    `unsolved_test_pairs`: what happens to test pairs without a solution whose subset sends them to train/:
    "train" (with upstream's dummy `[[0]]` labels, as upstream; the default of the upstream scheme) or "drop"
    (the per-task scheme's default).
    """
    t_start = time.monotonic()
    if sources is not None:
        subsets = [s for s, _, _ in sources]
    subsets, test_set_names, train_only_subsets = list(subsets), list(test_set_names), list(train_only_subsets)
    warnings = _check_flags(subsets, test_set_names, train_only_subsets, rng_scheme, split_order,
                            unsolved_test_pairs, {"num_aug": (num_aug, 0), "seed": (seed, 0),
                                                  "canvas_size": (canvas_size, 1), "chunk_rows": (chunk_rows, 1),
                                                  "puzzle_identifiers_start": (puzzle_identifiers_start, 1)})
    upstream = rng_scheme == "upstream"
    if unsolved_test_pairs is None:
        unsolved_test_pairs = "train" if upstream else "drop"
    route = _route(subsets, test_set_names, train_only_subsets)
    out = Path(output_dir)
    seq = canvas_size * canvas_size
    stream = LegacyStream(seed) if upstream else None
    order = tuple(split_order) if upstream else SPLITS

    # Pass 1: load, route and decide every augmentation, in upstream's order (subsets in turn, tasks shuffled).
    problems: list[str] = []
    plans: list[_Plan] = []
    unsolved = {"dropped": 0, "trained_on_dummy_labels": 0}
    files = _sources(input_file_prefix, subsets, sources)
    bar = Progress(None, "planning augmentations", unit="task", enabled=progress)
    for subset, challenges, solutions in files:
        tasks, bad = load_tasks(challenges, solutions, skip_invalid=skip_invalid, keep_raw=route[subset] == "test")
        problems += bad
        loaded = []
        for task in tasks.values():
            grids = [g for pair in task.train for g in pair] + task.test_inputs + (task.test_outputs or [])
            too_big = max(max(g.shape) for g in grids)
            if too_big > canvas_size:
                problems.append(f"{challenges.name}: task {task.task_id}: has a grid side of {too_big}, "
                                f"larger than the canvas ({canvas_size}); skipped")
            else:
                loaded.append(task)
        if upstream:  # np.random.shuffle(list of tasks), once per subset
            loaded = [loaded[i] for i in stream.shuffle_order(len(loaded))]
        for task in loaded:
            plans.append(_plan_task(subset, task, route[subset], num_aug, seed, stream, unsolved_test_pairs,
                                    unsolved, colour_permutation, dihedral_first))
            bar.update()
    bar.close()
    if unsolved["trained_on_dummy_labels"]:
        warnings.append(f"{unsolved['trained_on_dummy_labels']} test pairs without a solution went to train/ with "
                        f"upstream's dummy [[0]] labels (their subset is not a test set); "
                        f"--unsolved-test-pairs drop keeps them out")

    splits = {"train": plans, "test": [p for p in plans if p.test_pairs]}
    num_identifiers, runs = _assign_identifiers(splits, order, puzzle_identifiers_start, by_task=not upstream)

    # Pass 2: encode and append, split by split, one task (and at most chunk_rows rows) at a time.
    total_rows = sum(len(p.tids) * len(pairs) for split in order for p, pairs in _entries(splits, split))
    bar = Progress(total_rows, "writing rows", unit="row", enabled=progress)
    summary: dict = {"output_dir": str(out), "rng_scheme": rng_scheme, "split_order": list(order),
                     "num_puzzle_identifiers": num_identifiers, "problems": problems, "warnings": warnings,
                     "test_pairs_without_solution_dropped_from_train": unsolved["dropped"]}
    for split in order:
        if splits[split]:
            summary[split] = _write_split(out / split, split, _entries(splits, split), seed, stream,
                                          enable_train_translation and split == "train", canvas_size, chunk_rows,
                                          num_identifiers, bar)
    bar.close()
    _write_identifiers(out / "identifiers.json", puzzle_identifiers_start, runs)
    entries: dict[str, str] = {}
    for p in plans:  # a task id repeated across test sets keeps its first place and its last entry, as upstream
        if p.test_json is not None:
            entries[p.task.task_id] = p.test_json
    (out / "test_puzzles.json").write_text("{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in entries.items())
                                           + "}")
    summary["seconds"] = round(time.monotonic() - t_start, 2)
    return summary


def _plan_task(subset: str, task: Task, route: str, num_aug: int, seed: int, stream: LegacyStream | None,
               unsolved_test_pairs: str, unsolved: dict, colour_permutation: bool, dihedral_first: bool) -> _Plan:
    """Route one task's pairs and decide its augmentations (from `stream`, or its own generator without one)."""
    solved = task.test_outputs is not None
    test_pairs = list(zip(task.test_inputs, task.test_outputs if solved else [DUMMY_OUTPUT] * len(task.test_inputs)))
    train_pairs, to_test = list(task.train), []
    if route == "test":
        to_test = test_pairs
    elif solved or unsolved_test_pairs == "train":
        # upstream lists a task's pairs in the file's key order
        train_pairs = test_pairs + train_pairs if task.test_before_train else train_pairs + test_pairs
        unsolved["trained_on_dummy_labels"] += 0 if solved else len(test_pairs)
    else:
        unsolved["dropped"] += len(test_pairs)
    if stream is not None:
        tids, perms = plan_augmentations_upstream(train_pairs + to_test, num_aug, stream, colour_permutation,
                                                  dihedral_first)
    else:
        grids = [g for pair in train_pairs + to_test for g in pair]
        tids, perms = plan_augmentations(grids, num_aug, _task_rng(seed, subset, task.task_id, 0),
                                         colour_permutation, dihedral_first)
    plan = _Plan(subset, task, train_pairs, to_test, tids, perms)
    if to_test:
        plan.test_json = _upstream_test_entry(task)
    task.raw = task.raw_solution = None  # written out above; no need to hold the file's JSON any longer
    return plan


def _entries(splits: dict[str, list[_Plan]], split: str) -> list[tuple[_Plan, list]]:
    return [(p, p.train_pairs if split == "train" else p.test_pairs) for p in splits[split]]


def _write_split(folder: Path, split: str, entries: list[tuple[_Plan, list]], seed: int,
                 stream: LegacyStream | None, translate: bool, canvas: int, chunk_rows: int, num_identifiers: int,
                 bar: Progress) -> dict:
    """Write one split's arrays and dataset.json; returns its counts."""
    folder.mkdir(parents=True, exist_ok=True)
    seq = canvas * canvas
    n_rows = sum(len(p.tids) * len(pairs) for p, pairs in entries)
    writers = [_NpyAppender(folder / f"all__{name}.npy", n_rows, seq) for name in ("inputs", "labels")]
    puzzle_ids, puzzle_sizes, group_sizes = [], [], []
    for p, pairs in entries:
        if stream is not None:
            offsets = _offsets_upstream(pairs, p.tids, stream, canvas, translate)
        elif translate:
            offsets = _offsets_per_task(pairs, p.tids, _task_rng(seed, p.subset, p.task.task_id, 1), canvas)
        else:
            offsets = None
        for inputs, labels in _encode_chunks(pairs, p.tids, p.perms, offsets, canvas, chunk_rows):
            writers[0].append(inputs)
            writers[1].append(labels)
            bar.update(len(inputs))
        puzzle_ids.append(p.ids)
        puzzle_sizes.append(np.full(len(p.tids), len(pairs), dtype=np.int64))
        group_sizes.append(len(p.tids))
    for w in writers:
        w.close()
    sizes = np.concatenate(puzzle_sizes)
    np.save(folder / "all__puzzle_identifiers.npy", np.concatenate(puzzle_ids).astype(np.int32))
    np.save(folder / "all__puzzle_indices.npy", np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32))
    np.save(folder / "all__group_indices.npy", np.concatenate([[0], np.cumsum(group_sizes)]).astype(np.int32))
    # upstream's PuzzleDatasetMetadata, in its field order; canvas_size only when it is not upstream's 30
    metadata = {"pad_id": PAD, "ignore_label_id": PAD, "blank_identifier_id": 0, "vocab_size": VOCAB_SIZE,
                "seq_len": seq, "num_puzzle_identifiers": num_identifiers, "total_groups": len(group_sizes),
                "mean_puzzle_examples": n_rows / len(sizes), "total_puzzles": len(sizes), "sets": ["all"]}
    if canvas != 30:
        metadata["canvas_size"] = canvas
    (folder / "dataset.json").write_text(json.dumps(metadata))
    return {"groups": len(group_sizes), "puzzles": len(sizes), "examples": n_rows}


def _write_identifiers(path: Path, start: int, runs: list[tuple[_Plan, np.ndarray]]) -> None:
    """identifiers.json (index = identifier, `<blank>` below `start`), streamed one task at a time."""
    with open(path, "w") as f:
        f.write("[" + ", ".join(['"<blank>"'] * start))
        for plan, new in runs:
            if len(new):
                names = plan.names()
                f.write(", " + json.dumps([names[k] for k in new])[1:-1])  # json.dump's ", " separator
        f.write("]")


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
        description="Build an augmented ARC dataset in upstream TRM's layout (by default byte-identical to "
                    "upstream's builder with the same flags).\n\nexample:\n"
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
    parser.add_argument("--rng-scheme", choices=RNG_SCHEMES, default="upstream",
                        help="upstream: numpy's legacy global RNG in upstream's order, so identifiers and arrays "
                             "match upstream's builder byte for byte (published checkpoints need this); per-task: "
                             "one generator per task, so a task's augmentations do not depend on the mix")
    parser.add_argument("--split-order", choices=("auto", "train-first", "test-first"), default="auto",
                        help="which split is numbered and written first; upstream: train, except that when its "
                             "first subset is a test set Python's string hashing decides (auto: follows it when "
                             "PYTHONHASHSEED is set, else train first)")
    parser.add_argument("--unsolved-test-pairs", choices=("train", "drop"), default=None,
                        help="test pairs without a solution in a subset that is not a test set: train on "
                             "upstream's dummy [[0]] labels (upstream scheme's default) or drop them")
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
    subsets = [s for s, _, _ in sources] if sources else args.subsets
    first_is_test = _route(subsets[:1], test_names, args.train_only_subsets).get(subsets[0]) == "test"
    order, note = SPLITS, None
    if args.split_order == "test-first":
        order = ("test", "train")
    elif args.split_order == "auto" and first_is_test and args.rng_scheme == "upstream":
        if os.environ.get("PYTHONHASHSEED", "random") != "random":
            order = python_set_split_order()
        else:
            note = ("the first subset is a test set, so upstream's split order (and with it every identifier) "
                    "depends on Python's string hashing; this build puts train first. To match an upstream build "
                    "whose test/ puzzles were numbered first, pass --split-order test-first (or set PYTHONHASHSEED "
                    "to the value that build ran with).")
    try:
        summary = build_dataset(args.input_file_prefix, args.output_dir, args.subsets or [], test_names,
                                args.num_aug, args.seed, args.puzzle_identifiers_start, args.train_only_subsets,
                                args.enable_train_translation, args.canvas_size, args.skip_invalid,
                                args.chunk_rows, not args.no_progress, sources,
                                colour_permutation=args.colour_permutation, dihedral_first=args.dihedral_first,
                                rng_scheme=args.rng_scheme, split_order=order,
                                unsolved_test_pairs=args.unsolved_test_pairs)
    except ValueError as e:  # TaskError included: a bad flag or task file is the user's to fix, not a traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    for line in summary["problems"]:
        print(f"skipped: {line}", file=sys.stderr)
    for line in summary["warnings"]:
        print(f"warning: {line}", file=sys.stderr)
    if note:  # after the build: a failed build's error stays the one line on stderr
        print(f"note: {note}", file=sys.stderr)
    print(json.dumps({k: v for k, v in summary.items() if k not in ("problems", "warnings")}
                     | {"problems": len(summary["problems"])}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
