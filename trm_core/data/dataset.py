"""The training/evaluation data loader over datasets in upstream TRM's layout (see `trm_core.data.build`).

    ds = PuzzleDataset("data/built/arc2concept-aug-1000", "train", global_batch_size=768, rank=r, world_size=w)
    for batch in ds.iter_train(epoch):          # identical order on every rank; rank r gets its slice
        ...                                     # inputs (local, seq_len) int32, labels int64 (-100 = ignore)
    for batch in PuzzleDataset(path, "test", global_batch_size=768).iter_test():
        ...                                     # every example exactly once across ranks, plus example_index

The big arrays (inputs, labels) are memory-mapped; the index arrays live in RAM. Unlike upstream, all
randomness of an epoch comes from one generator seeded by (seed, epoch): every rank computes the same global
batches (upstream's global `np.random.choice` let ranks disagree, duplicating and dropping examples), and
`start_batch` resumes exactly. Several dataset paths form one pool of groups.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

IGNORE_INDEX = -100  # label value the loss ignores


@dataclass
class DatasetMetadata:
    """The fields of `<split>/dataset.json` (upstream's PuzzleDatasetMetadata, plus `canvas_size`)."""

    pad_id: int
    ignore_label_id: int | None
    blank_identifier_id: int
    vocab_size: int
    seq_len: int
    num_puzzle_identifiers: int
    total_groups: int
    mean_puzzle_examples: float
    total_puzzles: int
    sets: list[str] = field(default_factory=lambda: ["all"])
    canvas_size: int = 30

    @classmethod
    def load(cls, path: str | Path) -> "DatasetMetadata":
        """Read a dataset.json; extra keys (newer writers) are ignored, a missing one is an error."""
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: cannot read dataset metadata ({e})") from None
        names = {f.name for f in fields(cls)}
        missing = [f.name for f in fields(cls) if f.name not in raw and f.name not in ("sets", "canvas_size")]
        if missing:
            raise ValueError(f"{path}: missing {missing}")
        return cls(**{k: v for k, v in raw.items() if k in names})


@dataclass
class _Part:
    """One dataset path's split: mmapped rows and in-RAM indices, with its offsets in the merged pool."""

    path: Path
    inputs: np.ndarray
    labels: np.ndarray
    row_offset: int


class PuzzleDataset:
    """Batches of one split of one or more built datasets, sharded over `world_size` ranks."""

    def __init__(self, paths: str | Path | list[str | Path], split: str, *, global_batch_size: int, rank: int = 0,
                 world_size: int = 1, seed: int = 0, max_examples_per_puzzle: int | None = None,
                 max_eval_augmentations: int | None = None):
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if global_batch_size < 1 or global_batch_size % world_size:
            raise ValueError(f"global_batch_size ({global_batch_size}) must be a positive multiple of "
                             f"world_size ({world_size})")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if max_examples_per_puzzle is not None and max_examples_per_puzzle < 1:
            raise ValueError(f"max_examples_per_puzzle must be >= 1 or None, got {max_examples_per_puzzle}")
        if max_eval_augmentations is not None and max_eval_augmentations < 0:
            raise ValueError(f"max_eval_augmentations must be >= 0 or None, got {max_eval_augmentations}")
        self.split, self.rank, self.world_size, self.seed = split, rank, world_size, seed
        self.global_batch_size = global_batch_size
        self.local_batch_size = global_batch_size // world_size
        self.max_examples_per_puzzle = max_examples_per_puzzle
        self.max_eval_augmentations = max_eval_augmentations

        paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        if not paths:
            raise ValueError("paths must name at least one dataset directory")
        self._parts: list[_Part] = []
        metas, id_ranges = [], []
        puzzle_ids, puzzle_indices, group_indices = [], [np.zeros(1, np.int64)], [np.zeros(1, np.int64)]
        rows = puzzles = 0
        for p in map(Path, paths):
            d = p / split
            meta = DatasetMetadata.load(d / "dataset.json")
            arrays = {}
            for name in ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices"):
                f = d / f"all__{name}.npy"
                if not f.is_file():
                    raise ValueError(f"{f}: missing (is {p} a dataset built by `trm build-data`?)")
                # Only the two big arrays are memory-mapped; the indices are small and read often.
                arrays[name] = np.load(f, mmap_mode="r" if name in ("inputs", "labels") else None)
            if arrays["inputs"].shape[1:] != (meta.seq_len,) or arrays["labels"].shape != arrays["inputs"].shape:
                raise ValueError(f"{d}: inputs {arrays['inputs'].shape} / labels {arrays['labels'].shape} do not "
                                 f"match seq_len {meta.seq_len}")
            self._parts.append(_Part(p, arrays["inputs"], arrays["labels"], rows))
            metas.append((p, meta))
            ids = arrays["puzzle_identifiers"].astype(np.int32)
            if len(ids):
                id_ranges.append((p, int(ids.min()), int(ids.max())))
            puzzle_ids.append(ids)
            puzzle_indices.append(arrays["puzzle_indices"][1:].astype(np.int64) + rows)
            group_indices.append(arrays["group_indices"][1:].astype(np.int64) + puzzles)
            rows += len(arrays["inputs"])
            puzzles += len(ids)
        self.puzzle_identifiers = np.concatenate(puzzle_ids)  # (P,) int32
        self.puzzle_indices = np.concatenate(puzzle_indices)  # (P+1,) example offsets into the merged pool
        self.group_indices = np.concatenate(group_indices)  # (G+1,) puzzle offsets
        self.metadata = _merge_metadata(metas, rows, puzzles, len(self.group_indices) - 1)
        _check_disjoint(id_ranges)
        self._test_rows = self._capped_rows()

    # ---- training ----

    def _epoch_plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, puzzle ids) of one epoch in batch order: groups in a random order, one random puzzle each,
        its examples shuffled and capped at max_examples_per_puzzle. Same on every rank."""
        rng = np.random.default_rng([self.seed, epoch])
        groups = rng.permutation(len(self.group_indices) - 1)
        puzzle = rng.integers(self.group_indices[groups], self.group_indices[groups + 1])  # one puzzle per group
        start = self.puzzle_indices[puzzle]
        size = self.puzzle_indices[puzzle + 1] - start
        seg = np.repeat(np.arange(len(puzzle)), size)  # segment (visited puzzle) of each candidate example
        within = np.arange(len(seg)) - np.repeat(np.cumsum(size) - size, size)  # position inside its segment
        shuffled = np.lexsort((rng.random(len(seg)), seg))  # a random permutation inside each segment
        keep = within < (self.max_examples_per_puzzle or np.iinfo(np.int64).max)
        rows = start[seg] + within[shuffled]
        return rows[keep], self.puzzle_identifiers[puzzle][seg][keep]

    def rows_per_epoch(self, epoch: int = 0) -> int:
        """Training rows chosen in `epoch` (one augmented version per group, capped per puzzle), all ranks."""
        return len(self._epoch_plan(epoch)[0])

    def batches_per_epoch(self, epoch: int = 0) -> int:
        """Full global batches in `epoch` (the last incomplete one is dropped)."""
        return self.rows_per_epoch(epoch) // self.global_batch_size

    def total_train_steps(self, epochs: int) -> int:
        """Upstream's step count: int(epochs * total_groups * mean_puzzle_examples / global_batch_size)."""
        m = self.metadata
        return int(epochs * m.total_groups * m.mean_puzzle_examples / self.global_batch_size)

    def iter_train(self, epoch: int, start_batch: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        """This rank's rows [rank*local, (rank+1)*local) of each global batch of `epoch`, from `start_batch` on."""
        rows, pids = self._epoch_plan(epoch)
        n_batches = len(rows) // self.global_batch_size
        if not 0 <= start_batch <= n_batches:
            raise ValueError(f"start_batch must be in 0..{n_batches} for epoch {epoch}, got {start_batch}")
        for b in range(start_batch, n_batches):
            lo = b * self.global_batch_size + self.rank * self.local_batch_size
            sl = slice(lo, lo + self.local_batch_size)
            yield self._collate(rows[sl], pids[sl])

    # ---- evaluation ----

    def _capped_rows(self) -> np.ndarray:
        """Global rows that iter_test visits: per group the original + first max_eval_augmentations puzzles."""
        first = self.group_indices[:-1]
        last = self.group_indices[1:]
        if self.max_eval_augmentations is not None:
            last = np.minimum(last, first + 1 + self.max_eval_augmentations)
        lo, hi = self.puzzle_indices[first], self.puzzle_indices[last]
        size = hi - lo
        return np.repeat(lo - (np.cumsum(size) - size), size) + np.arange(int(size.sum()))

    @property
    def num_test_examples(self) -> int:
        """Examples iter_test covers (after the max_eval_augmentations cap), over all ranks."""
        return len(self._test_rows)

    def test_batches(self) -> int:
        """Batches iter_test yields; the same on every rank (short ranks get padding rows)."""
        return -(-self.num_test_examples // self.global_batch_size)

    def iter_test(self) -> Iterator[dict[str, torch.Tensor]]:
        """Sequential global windows; rank r takes its contiguous slice, padded to local_batch_size.

        Padding rows have puzzle_identifiers 0 (blank), labels -100 and example_index -1.
        """
        for b in range(self.test_batches()):
            lo = b * self.global_batch_size + self.rank * self.local_batch_size
            rows = self._test_rows[lo:lo + self.local_batch_size]
            pids = self.puzzle_identifiers[np.searchsorted(self.puzzle_indices, rows, side="right") - 1]
            yield self._collate(rows, pids, with_index=True)

    def test_rows(self, lo: int, hi: int) -> np.ndarray:
        """Global test rows of augmentation levels [lo, hi) of every group, group by group (level 0 is the original
        puzzle, level k its k-th augmentation; groups with fewer levels give what they have)."""
        first, last = self.group_indices[:-1], self.group_indices[1:]
        puzzles = [np.arange(a + lo, min(a + hi, b)) for a, b in zip(first, last) if a + lo < b]
        if not puzzles:
            return np.zeros(0, np.int64)
        p = np.concatenate(puzzles)
        starts, sizes = self.puzzle_indices[p], self.puzzle_indices[p + 1] - self.puzzle_indices[p]
        return np.repeat(starts - (np.cumsum(sizes) - sizes), sizes) + np.arange(int(sizes.sum()))

    def test_batch(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        """`rows` (global test rows) as one batch of exactly len(rows), with `example_index` (no padding)."""
        pids = self.puzzle_identifiers[np.searchsorted(self.puzzle_indices, rows, side="right") - 1]
        return self._collate(np.asarray(rows), pids, with_index=True, size=len(rows))

    # ---- shared ----

    def _collate(self, rows: np.ndarray, pids: np.ndarray, with_index: bool = False,
                 size: int | None = None) -> dict[str, torch.Tensor]:
        n, local, seq = len(rows), size or self.local_batch_size, self.metadata.seq_len
        inputs = np.full((local, seq), self.metadata.pad_id, dtype=np.int32)
        labels = np.full((local, seq), IGNORE_INDEX, dtype=np.int64)
        ids = np.full(local, self.metadata.blank_identifier_id, dtype=np.int32)
        for part in self._parts:
            mine = np.flatnonzero((rows >= part.row_offset) & (rows < part.row_offset + len(part.inputs)))
            local_rows = rows[mine] - part.row_offset
            inputs[mine] = part.inputs[local_rows]
            labels[mine] = part.labels[local_rows]
        if self.metadata.ignore_label_id is not None:
            labels[:n][labels[:n] == self.metadata.ignore_label_id] = IGNORE_INDEX
        ids[:n] = pids
        batch = {"inputs": torch.from_numpy(inputs), "labels": torch.from_numpy(labels),
                 "puzzle_identifiers": torch.from_numpy(ids)}
        if with_index:
            index = np.full(local, -1, dtype=np.int64)
            index[:n] = rows
            batch["example_index"] = torch.from_numpy(index)
        return batch


def _merge_metadata(metas: list[tuple[Path, DatasetMetadata]], rows: int, puzzles: int,
                    groups: int) -> DatasetMetadata:
    """One metadata for several paths: shapes and special ids must agree; identifier counts are summed (as
    upstream, so the embedding table covers every path's ids)."""
    first_path, first = metas[0]
    for path, meta in metas[1:]:
        for name in ("seq_len", "vocab_size", "pad_id", "ignore_label_id", "blank_identifier_id", "canvas_size"):
            if getattr(meta, name) != getattr(first, name):
                raise ValueError(f"datasets disagree on {name}: {first_path} has {getattr(first, name)}, "
                                 f"{path} has {getattr(meta, name)}")
    return DatasetMetadata(
        pad_id=first.pad_id, ignore_label_id=first.ignore_label_id, blank_identifier_id=first.blank_identifier_id,
        vocab_size=first.vocab_size, seq_len=first.seq_len,
        num_puzzle_identifiers=sum(m.num_puzzle_identifiers for _, m in metas), total_groups=groups,
        mean_puzzle_examples=rows / puzzles if puzzles else 0.0, total_puzzles=puzzles, sets=["all"],
        canvas_size=first.canvas_size)


def _check_disjoint(id_ranges: list[tuple[Path, int, int]]) -> None:
    """Two paths sharing puzzle identifiers would share (and fight over) embedding rows."""
    ordered = sorted(id_ranges, key=lambda r: r[1])
    for (pa, _, hi_a), (pb, lo_b, hi_b) in zip(ordered, ordered[1:]):
        if lo_b <= hi_a:
            raise ValueError(f"puzzle identifiers of {pa} (up to {hi_a}) and {pb} ({lo_b}..{hi_b}) overlap; "
                             f"build the second with --puzzle-identifiers-start {hi_a + 1}")
