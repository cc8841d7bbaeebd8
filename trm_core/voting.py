"""Voting over the predictions for augmented test inputs, and pass@K.

Step 2 and 3 of an evaluation (`trm_core.evaluate` runs the inference before them, `trm_core.submission`
writes the submission after them):
- `VoteAccumulator` / `vote`: crop each prediction at EOS, undo its augmentation (inverse dihedral, inverse
  colour map), assign it to the test input whose inverse-augmented *input* it came from, group identical
  grids and rank them (`rank_by`: votes then mean sigmoid(q_halt), as upstream `evaluators/arc.py`).
  Vectorised with numpy: rows are processed in blocks of equal crop size (one gather undoes every row's
  transform and colour map) and grids are keyed by a 128-bit hash computed with array ops, not a per-row
  sha256 loop (12x faster than a per-row re-implementation of upstream's loop on ARC-AGI-2-sized
  predictions, 5x if its crop were free: bench/bench_voting.py). One accumulator holds one evaluation;
  several are pooled only on request (`VoteAccumulator.pooled`, or `VotePool` across a training run's
  evaluations: upstream's `aggregated_voting=True`).
- Empty predictions (a 0x0 crop) are dropped by default; `count_empty=True` keeps them as a candidate (an empty
  grid) as upstream does, so they take votes and pass@K slots. Submissions never use them.
- `truth_ranks` / `pass_at_k` (per task: fraction of test outputs whose truth is in the first K; averaged
  over tasks, as upstream).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from trm_core.data.augment import (COLOR_OFFSET, SWAPS_AXES, crop_tokens_batch, inverse_dihedral_transform,
                                   parse_aug_names)

PASS_KS = (1, 2, 5, 10, 100, 1000)
RANK_RULES = ("votes_then_q", "votes", "q")
MAX_SIDE = 30
TestInputs = Mapping[str, Sequence[Any]]  # task id -> test input grids (lists of lists or 2-D arrays)


@dataclass(frozen=True)
class Candidate:
    """One distinct predicted grid for a test input (colours 0..9), its vote count and mean sigmoid(q_halt).

    The likelihood fields are filled only when the candidate was rescored (`trm_core.rescore`): `logprob` is the
    sum over `views` augmented views of the model's log-probability of the grid (the product-of-experts score),
    `tokens` the label tokens scored per view (cells + EOS border).
    """

    grid: np.ndarray  # (h, w) uint8
    votes: int
    mean_q: float
    logprob: float | None = None
    views: int = 0
    tokens: int = 0


Ranked = dict[tuple[str, int], list[Candidate]]  # (task id, test index) -> candidates, best first


# ----------------------------------------------------------------------------------------------------------
# Grid keys: a 128-bit hash computed with array ops
# ----------------------------------------------------------------------------------------------------------

# Fixed keys (odd, random): word 0 is for the grid's shape, word j >= 1 for raster bytes 8(j-1)..8j-1.
_HASH_KEYS = np.random.default_rng(20251007).integers(0, 2**63, size=(2, 1 + 1024), dtype=np.uint64) * 2 + 1


def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser (a bijection on uint64 that spreads every input bit over the output)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _hash_rasters(rasters: np.ndarray, heights: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """(n, area) uint8 rasters (colours 0..9) of grids of the given (n,) heights x widths -> (n, 2) uint64 keys.

    Each 8-byte word j of the packed raster (word 0 is the shape) is xor-ed with a random per-position key
    and mixed; key 0 is the sum of the mixed words, key 1 their sum weighted by other random odd numbers.
    Two different grids share a key with probability ~2^-128, so equal keys are taken to mean equal grids.
    """
    n, area = rasters.shape
    half = -(-area // 2)
    words = -(-half // 8)
    padded = np.zeros((n, 1 + words), dtype=np.uint64)
    padded[:, 0] = np.asarray(heights, np.uint64) * np.uint64(1024) + np.asarray(widths, np.uint64)
    packed = padded[:, 1:].view(np.uint8)  # two colours (4 bits each) per byte: half the words to mix
    packed[:, :half] = rasters[:, ::2] << 4
    packed[:, :area // 2] |= rasters[:, 1::2]
    with np.errstate(over="ignore"):
        mixed = _mix64(padded ^ _HASH_KEYS[0, :1 + words])  # (n, 1 + words)
        out = np.empty((n, 2), dtype=np.uint64)
        out[:, 0] = mixed.sum(axis=1, dtype=np.uint64)
        out[:, 1] = (mixed * _HASH_KEYS[1, :1 + words]).sum(axis=1, dtype=np.uint64)
    return out


@lru_cache(maxsize=None)
def _inverse_gathers(h: int, w: int, canvas: int) -> np.ndarray:
    """(8, h*w) canvas positions: row t, read in order, is the h x w top-left grid with the inverse of
    transform t applied, row-major (its shape is w x h for the transforms that swap axes)."""
    grid = np.arange(h * w).reshape(h, w)  # indices into the h x w grid
    out = np.empty((8, h * w), dtype=np.int32 if canvas * canvas < 2**31 else np.int64)
    for tid in range(8):
        src = inverse_dihedral_transform(grid, tid).reshape(-1)
        out[tid] = (src // w) * canvas + src % w
    return out


# ----------------------------------------------------------------------------------------------------------
# Voting
# ----------------------------------------------------------------------------------------------------------

class VoteAccumulator:
    """Collects the votes of one evaluation; `ranked()` returns the candidates per (task id, test index).

    Args:
        identifiers: the dataset's identifiers.json list (puzzle id -> `task|||t{k}|||{perm}`, [0] = blank).
        test_inputs: task id -> its test input grids, in order (only these tasks are voted for).
        canvas: side of the token canvas (seq_len = canvas**2).
        flush_rows: rows buffered before they are processed as one block (bounds memory).
        count_empty: keep empty predictions (0x0 crops) as a candidate, as upstream's evaluator does (it hashes
            the empty grid like any other); by default they are no answer and take no vote.
    """

    def __init__(self, identifiers: Sequence[str], test_inputs: TestInputs, *, canvas: int = 30,
                 flush_rows: int = 65536, count_empty: bool = False) -> None:
        self.identifiers, self.canvas, self.flush_rows = identifiers, canvas, flush_rows
        self.count_empty = count_empty
        self.task_ids = list(test_inputs)
        self.groups: list[tuple[str, int]] = [(t, i) for t in self.task_ids for i in range(len(test_inputs[t]))]
        task_index = {t: k for k, t in enumerate(self.task_ids)}
        self._task_index = task_index
        # (task index, key of the test input grid) -> group indices (a task may repeat a test input).
        self._input_groups: dict[tuple[int, bytes], list[int]] = {}
        self._shape_groups: dict[int, list[int]] = {}  # (task index, height, width) code -> group indices
        for g, (t, i) in enumerate(self.groups):
            grid = np.asarray(test_inputs[t][i], dtype=np.uint8)
            key = _hash_rasters(grid.reshape(1, -1), [grid.shape[0]], [grid.shape[1]])[0].tobytes()
            self._input_groups.setdefault((task_index[t], key), []).append(g)
            code = (task_index[t] * (canvas + 1) + grid.shape[0]) * (canvas + 1) + grid.shape[1]
            self._shape_groups.setdefault(code, []).append(g)
        # Parsed identifiers, filled lazily: task index (-1 = not voted for, -2 = not parsed yet),
        # transform id, and token -> colour lookup of the inverse colour map.
        self._pid_task = np.full(len(identifiers), -2, dtype=np.int32)
        self._pid_tid = np.zeros(len(identifiers), dtype=np.int8)
        self._pid_lut = np.zeros((len(identifiers), COLOR_OFFSET + 10), dtype=np.uint8)
        self._pending: list[tuple[np.ndarray, ...]] = []
        self._pending_rows = 0
        self._rows_seen = 0
        # Processed state, one entry per block: per-row arrays and the block's rasters.
        self._group: list[np.ndarray] = []  # (n,) int32 group index
        self._key: list[np.ndarray] = []  # (n, 2) uint64 grid key
        self._q: list[np.ndarray] = []  # (n,) float64 sigmoid(q_halt)
        self._order: list[np.ndarray] = []  # (n,) int64 arrival order (ties are broken by first arrival)
        self._where: list[np.ndarray] = []  # (n, 2) int32: raster block index, row inside it
        self._rasters: list[tuple[np.ndarray, ...]] = []  # (rasters (m, h*w) uint8, heights (m,), widths (m,))
        self.stats = {"rows": 0, "blank_rows": 0, "unknown_task_rows": 0, "unmatched_input_rows": 0,
                      "empty_predictions": 0}

    # -- adding rows ----------------------------------------------------------------------------------------
    def add(self, inputs: np.ndarray, preds: np.ndarray, puzzle_identifiers: np.ndarray,
            q_halt_logits: np.ndarray) -> None:
        """Add a batch: token rows `inputs`, `preds` (B, canvas**2), ids (B,), q_halt logits (B,)."""
        inputs, preds = np.asarray(inputs, dtype=np.uint8), np.asarray(preds, dtype=np.uint8)  # vocab 12
        pids = np.asarray(puzzle_identifiers).astype(np.int64).reshape(-1)
        q = np.asarray(q_halt_logits, dtype=np.float64).reshape(-1)
        if not (inputs.shape == preds.shape and inputs.ndim == 2 and inputs.shape[0] == len(pids) == len(q)):
            raise ValueError(f"inconsistent shapes: inputs {inputs.shape}, preds {preds.shape}, "
                             f"puzzle_identifiers {pids.shape}, q_halt_logits {q.shape}")
        if inputs.shape[1] != self.canvas ** 2:
            raise ValueError(f"rows have {inputs.shape[1]} tokens, expected canvas**2 = {self.canvas ** 2}")
        if len(pids) and max(inputs.max(), preds.max()) >= COLOR_OFFSET + 10:
            raise ValueError(f"token ids must be < {COLOR_OFFSET + 10} (PAD 0, EOS 1, colours 2..11)")
        order = np.arange(self._rows_seen, self._rows_seen + len(pids), dtype=np.int64)
        self._rows_seen += len(pids)
        self._pending.append((inputs, preds, pids, q, order))
        self._pending_rows += len(pids)
        if self._pending_rows >= self.flush_rows:
            self._flush()
        else:  # buffered for later: own the memory, the caller may reuse its arrays
            self._pending[-1] = tuple(np.array(a) for a in self._pending[-1])

    def _parse(self, pids: np.ndarray) -> None:
        """Parse the identifiers of ids not seen yet (vectorised: ~120k names for ARC-AGI-2 at 1000 augs)."""
        new = np.unique(pids[self._pid_task[pids] == -2])
        if not len(new):
            return
        task_ids, tids, perms = parse_aug_names([self.identifiers[i] for i in new])
        self._pid_task[new] = [self._task_index.get(t, -1) for t in task_ids]
        self._pid_tid[new] = tids
        self._pid_lut[new, COLOR_OFFSET:] = np.argsort(perms, axis=1)  # colour -> original colour

    def _leading_sizes(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(heights, widths): the leading colour runs of column 0 and of row 0 of each token row. For a
        well-formed row (a colour rectangle at the top left, then EOS, PAD or the canvas edge) this is its
        grid size, as the dataset writes test inputs and as a trained model writes its answers."""
        c = self.canvas
        col0, row0 = tokens[:, ::c], tokens[:, :c]  # (n, canvas) each
        col0 = (col0 >= COLOR_OFFSET) & (col0 < COLOR_OFFSET + 10)
        row0 = (row0 >= COLOR_OFFSET) & (row0 < COLOR_OFFSET + 10)
        return (np.where(col0.all(axis=1), c, col0.argmin(axis=1)),
                np.where(row0.all(axis=1), c, row0.argmin(axis=1)))

    def _invert(self, tokens: np.ndarray, pids: np.ndarray,
                sizes: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray, list]:
        """Crop, inverse-augment and key token rows.

        sizes: the rows' grid sizes when known (well-formed inputs); otherwise upstream's crop decides. Rows
        that pass `_key_blocks`' well-formedness check need nothing else (their crop is their leading runs);
        only the others go through `crop_tokens_batch`.
        Returns keys (n, 2) uint64 (zeros for empty crops), where (n, 2) int32 (block, row; -1 when empty)
        and the blocks `(rasters (m, h*w) uint8 colours, heights (m,), widths (m,))`.
        """
        n = len(tokens)
        flat = np.ascontiguousarray(tokens).reshape(-1)
        out = (np.zeros((n, 2), dtype=np.uint64), np.full((n, 2), -1, dtype=np.int32), [])
        if sizes is not None:
            self._key_blocks(flat, pids, np.arange(n), *sizes, out, verify=False)
            return out
        unsure = self._key_blocks(flat, pids, np.arange(n), *self._leading_sizes(tokens), out, verify=True)
        if len(unsure):
            self._key_blocks(flat, pids, unsure, *crop_tokens_batch(tokens[unsure], self.canvas), out, verify=False)
        return out

    def _key_blocks(self, flat: np.ndarray, pids: np.ndarray, rows_in: np.ndarray, heights: np.ndarray,
                    widths: np.ndarray, out: tuple, verify: bool) -> np.ndarray:
        """Gather, un-augment and key the grids of `rows_in` (sizes given), writing into `out`.

        Rows are processed in blocks of equal crop size: one gather undoes every row's own transform and
        colour map, so the Python loop runs at most canvas**2 times whatever the number of rows. With
        `verify`, a row is keyed only if it is well-formed for its size (all colours inside; no colour just
        right of a grid row); upstream's crop of such a row is exactly that size. The other rows are returned.
        """
        c, row_len = self.canvas, self.canvas ** 2
        keys, where, blocks = out
        index_dtype = np.int32 if len(flat) < 2**31 else np.int64
        nonempty = (heights > 0) & (widths > 0)  # a 0x0 crop is no grid (upstream's crop agrees: first cell)
        rows_of = rows_in[nonempty]
        codes = heights[nonempty] * (c + 1) + widths[nonempty]
        by_code = np.argsort(codes, kind="stable")
        codes, rows_of = codes[by_code], rows_of[by_code]
        starts = np.flatnonzero(np.diff(codes, prepend=-1))
        unsure = []
        for lo, hi in zip(starts, np.append(starts[1:], len(codes))):
            rows = rows_of[lo:hi]
            h, w = divmod(int(codes[lo]), c + 1)
            tids = self._pid_tid[pids[rows]].astype(np.intp)
            base = (rows.astype(index_dtype) * row_len)[:, None]
            # Flat gathers with int32 offsets: ~3x faster than 2-D fancy indexing with int64 indices.
            idx = _inverse_gathers(h, w, c)[tids]
            idx += base
            raster = flat[idx]  # (m, h*w) tokens, geometry undone
            if verify:  # uint8 wrap-around: token - 2 < 10 <=> token is a colour (2..11)
                ok = ((raster - np.uint8(COLOR_OFFSET)) < 10).all(axis=1)
                if w < c:
                    edge = flat[base + np.arange(w, h * c, c, dtype=index_dtype)]  # column w, rows 0..h-1
                    ok &= ((edge - np.uint8(COLOR_OFFSET)) >= 10).all(axis=1)
                if not ok.all():
                    unsure.append(rows[~ok])
                    rows, raster, tids = rows[ok], raster[ok], tids[ok]
                    if not len(rows):
                        continue
            luts = self._pid_lut[pids[rows]]  # (m, 12) token -> original colour
            lut_idx = np.add(raster, (np.arange(len(rows), dtype=idx.dtype) * luts.shape[1])[:, None],
                             out=idx if len(idx) == len(rows) else None)  # reuse idx's memory when we can
            raster = luts.reshape(-1)[lut_idx]
            swap = SWAPS_AXES[tids]
            h2, w2 = np.where(swap, w, h), np.where(swap, h, w)
            keys[rows] = _hash_rasters(raster, h2, w2)
            where[rows, 0] = len(blocks)
            where[rows, 1] = np.arange(len(rows), dtype=np.int32)
            blocks.append((raster, h2, w2))
        return np.concatenate(unsure) if unsure else np.zeros(0, dtype=np.intp)

    def _match_inputs(self, inputs: np.ndarray, pids: np.ndarray) -> tuple[np.ndarray, list, list]:
        """The test input (group index, -1 for none) each row's input is an augmentation of.

        The un-augmented input's shape picks the test input when only one of the task's test inputs has that
        shape (most rows, no content work); otherwise its content is inverted and keyed like a prediction.
        Returns (group per row, and for a test input repeated within a task, extra (rows, groups) that also
        get these rows' votes).
        """
        c = self.canvas
        heights, widths = self._leading_sizes(inputs)  # the dataset writes well-formed inputs
        swap = SWAPS_AXES[self._pid_tid[pids]]
        h2, w2 = np.where(swap, widths, heights), np.where(swap, heights, widths)
        codes = (self._pid_task[pids].astype(np.int64) * (c + 1) + h2) * (c + 1) + w2
        uniq, inverse = np.unique(codes, return_inverse=True)  # one per distinct (task, shape): few
        by_shape = [self._shape_groups.get(int(code), []) for code in uniq]
        group = np.array([gs[0] if len(gs) == 1 else -1 for gs in by_shape], dtype=np.int64)[inverse]
        extra_rows, extra_groups = [], []
        ambiguous = np.flatnonzero(np.array([len(gs) > 1 for gs in by_shape])[inverse])
        if len(ambiguous):
            keys, _, _ = self._invert(inputs[ambiguous], pids[ambiguous], (heights[ambiguous], widths[ambiguous]))
            tasks = self._pid_task[pids[ambiguous]].astype(np.uint64)
            lookup = np.concatenate([tasks[:, None], keys], axis=1)  # (m, 3)
            uniq, inverse = np.unique(lookup, axis=0, return_inverse=True)  # one per distinct test input
            inverse = inverse.reshape(-1)
            found = [self._input_groups.get((int(row[0]), row[1:].tobytes()), [-1]) for row in uniq]
            group[ambiguous] = np.array([gs[0] for gs in found], dtype=np.int64)[inverse]
            for u, gs in enumerate(found):
                for g in gs[1:]:  # the same grid repeated as another test input of the task: it votes for both
                    members = ambiguous[inverse == u]
                    extra_rows.append(members)
                    extra_groups.append(np.full(len(members), g))
        return group, extra_rows, extra_groups

    def _flush(self) -> None:
        if not self._pending:
            return
        inputs, preds, pids, q, order = (np.concatenate(p) if len(p) > 1 else p[0] for p in zip(*self._pending))
        self._pending, self._pending_rows = [], 0
        self.stats["rows"] += len(pids)
        keep = pids > 0  # id 0 is the blank puzzle of padding rows
        self.stats["blank_rows"] += int((~keep).sum())
        if (pids >= len(self.identifiers)).any():
            raise ValueError(f"puzzle identifier {int(pids.max())} is outside identifiers.json "
                             f"({len(self.identifiers)} entries): wrong dataset for these predictions?")
        self._parse(pids[keep])
        known = keep & (self._pid_task[pids] >= 0)
        self.stats["unknown_task_rows"] += int((keep & ~known).sum())
        inputs, preds, pids, q, order = inputs[known], preds[known], pids[known], q[known], order[known]
        if not len(pids):
            return

        group, extra_rows, extra_groups = self._match_inputs(inputs, pids)
        matched = group >= 0
        self.stats["unmatched_input_rows"] += int((~matched).sum())

        p_keys, p_where, blocks = self._invert(preds, pids)
        if extra_rows:
            dup = np.concatenate(extra_rows)
            idx = np.concatenate([np.flatnonzero(matched), dup])
            group = np.concatenate([group[matched], np.concatenate(extra_groups)])
        else:
            idx = np.flatnonzero(matched)
            group = group[idx]
        empty = p_where[idx, 0] < 0  # a 0x0 crop
        self.stats["empty_predictions"] += int(empty.sum())
        if self.count_empty and empty.any():  # one candidate (key 0, an empty raster block) like upstream's
            p_where = p_where.copy()
            p_where[idx[empty]] = (len(blocks), 0)
            blocks.append((np.zeros((1, 0), np.uint8), np.zeros(1, np.int64), np.zeros(1, np.int64)))
        else:
            idx, group = idx[~empty], group[~empty]
        offset = len(self._rasters)
        self._rasters.extend(blocks)
        self._group.append(group.astype(np.int32))
        self._key.append(p_keys[idx])
        self._q.append(1.0 / (1.0 + np.exp(-q[idx])))  # sigmoid in float64, as upstream
        self._order.append(order[idx])
        self._where.append(p_where[idx] + np.array([offset, 0], dtype=np.int32))

    # -- results --------------------------------------------------------------------------------------------
    @classmethod
    def pooled(cls, accumulators: Sequence["VoteAccumulator"]) -> "VoteAccumulator":
        """One accumulator holding the votes of several evaluations (e.g. several checkpoints or seeds)."""
        if not accumulators:
            raise ValueError("pooled() needs at least one accumulator")
        first = accumulators[0]
        out = cls.__new__(cls)
        out.__dict__.update({k: v for k, v in first.__dict__.items()})
        out._group, out._key, out._q, out._order, out._where, out._rasters = [], [], [], [], [], []
        out._pending, out._pending_rows, out._rows_seen = [], 0, 0
        out.stats = {k: 0 for k in first.stats}
        for acc in accumulators:
            if acc.groups != first.groups:
                raise ValueError("pooled accumulators must vote for the same tasks and test inputs")
            acc._flush()
            offset = len(out._rasters)
            out._rasters.extend(acc._rasters)
            for g, k, q, o, w in zip(acc._group, acc._key, acc._q, acc._order, acc._where):
                out._group.append(g)
                out._key.append(k)
                out._q.append(q)
                out._order.append(o + out._rows_seen)
                out._where.append(w + np.array([offset, 0], dtype=np.int32))
            out._rows_seen += acc._rows_seen
            for k, v in acc.stats.items():
                out.stats[k] += v
        return out

    def ranked(self, rank_by: str = "votes_then_q", max_candidates: int | None = None) -> Ranked:
        """Candidates per (task id, test index) for every test input (an empty list if it got no vote).

        rank_by: "votes_then_q" (upstream: vote count, then mean sigmoid(q_halt) breaks ties), "votes" (count
        only) or "q" (mean sigmoid(q_halt), then count). Remaining ties go to the grid seen first.
        """
        if rank_by not in RANK_RULES:
            raise ValueError(f"rank_by must be one of {RANK_RULES}, got {rank_by!r}")
        self._flush()
        out: Ranked = {g: [] for g in self.groups}
        if not self._group:
            return out
        group = np.concatenate(self._group).astype(np.int64)
        key = np.concatenate(self._key)
        q = np.concatenate(self._q)
        order = np.concatenate(self._order)
        where = np.concatenate(self._where)
        if len(group) == 0:
            return out
        # Sort rows by (group, key, arrival); runs of equal (group, key) are one candidate.
        srt = np.lexsort((order, key[:, 1], key[:, 0], group))
        g_s, k_s = group[srt], key[srt]
        new = np.ones(len(srt), dtype=bool)
        new[1:] = (g_s[1:] != g_s[:-1]) | (k_s[1:] != k_s[:-1]).any(axis=1)
        starts = np.flatnonzero(new)
        votes = np.diff(np.append(starts, len(srt)))
        mean_q = np.add.reduceat(q[srt], starts) / votes
        c_group, c_first, c_where = g_s[starts], order[srt][starts], where[srt][starts]
        sort_keys = {"votes_then_q": (c_first, -mean_q, -votes, c_group),
                     "votes": (c_first, -votes, c_group),
                     "q": (c_first, -votes, -mean_q, c_group)}[rank_by]
        best = np.lexsort(sort_keys)
        c_group = c_group[best]
        bounds = np.searchsorted(c_group, np.arange(len(self.groups) + 1))
        for g in np.flatnonzero(np.diff(bounds)):
            chosen = best[bounds[g]:bounds[g + 1]][:max_candidates]
            cands = []
            for c in chosen:
                rasters, hs, ws = self._rasters[c_where[c, 0]]
                r = c_where[c, 1]
                cands.append(Candidate(rasters[r].reshape(hs[r], ws[r]).copy(), int(votes[c]),
                                       float(mean_q[c])))
            out[self.groups[g]] = cands
        return out


def vote(inputs: np.ndarray, preds: np.ndarray, puzzle_identifiers: np.ndarray, q_halt_logits: np.ndarray,
         identifiers: Sequence[str], test_inputs: TestInputs, *, canvas: int | None = None,
         rank_by: str = "votes_then_q", max_candidates: int | None = None, count_empty: bool = False) -> Ranked:
    """Vote over one evaluation's predictions; see `VoteAccumulator` (arguments) and `.ranked()` (result)."""
    inputs = np.asarray(inputs)
    canvas = canvas or math.isqrt(inputs.shape[1])
    acc = VoteAccumulator(identifiers, test_inputs, canvas=canvas, count_empty=count_empty)
    acc.add(inputs, preds, puzzle_identifiers, q_halt_logits)
    return acc.ranked(rank_by, max_candidates)


# ----------------------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------------------

class VotePool:
    """The votes of every evaluation of a training run so far: upstream's `aggregated_voting=True`, where the
    evaluator never clears its predictions, so each pass@K and submission pools all earlier evaluations.

    It keeps each evaluation's complete candidate lists (distinct grids with their vote counts and mean q), not
    the rows: `pool_ranked` of complete lists counts exactly what pooling the rows would.
    """

    def __init__(self) -> None:
        self.ranked: Ranked | None = None
        self.evaluations = 0

    def add(self, ranked: Ranked, rank_by: str = "votes_then_q") -> Ranked:
        """Pool one evaluation's complete `ranked` (VoteAccumulator.ranked(), untruncated); returns the pool."""
        self.ranked = ranked if self.ranked is None else pool_ranked([self.ranked, ranked], rank_by)
        self.evaluations += 1
        return self.ranked

    def state_dict(self) -> dict:
        """Plain data (for a checkpoint's train state)."""
        cands = {f"{t}\t{i}": [[c.grid.tolist(), list(c.grid.shape), c.votes, c.mean_q] for c in cs]
                 for (t, i), cs in (self.ranked or {}).items()}
        return {"evaluations": self.evaluations, "ranked": cands if self.ranked is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.evaluations = int(state["evaluations"])
        self.ranked = None
        if state["ranked"] is not None:
            self.ranked = {}
            for key, cs in state["ranked"].items():
                t, i = key.rsplit("\t", 1)
                self.ranked[(t, int(i))] = [Candidate(np.array(g, dtype=np.uint8).reshape(shape), int(v), float(q))
                                            for g, shape, v, q in cs]


def pool_ranked(rankeds: Sequence[Ranked], rank_by: str = "votes_then_q") -> Ranked:
    """Merge the candidates of several evaluations (an ensemble of runs, checkpoints or seeds) per test input.

    Identical grids add their votes; mean_q becomes the vote-weighted mean; candidates are re-ranked with
    `rank_by` (remaining ties: the evaluation listed first, then its own order). Input lists may be truncated
    (predictions.json keeps each evaluation's top candidates): a grid missing from one list counts 0 votes there.
    Likelihoods (`Candidate.logprob`) are not pooled: they belong to one model, so pooled candidates carry none.
    """
    if rank_by not in RANK_RULES:
        raise ValueError(f"rank_by must be one of {RANK_RULES}, got {rank_by!r}")
    merged: dict[tuple[str, int], dict[tuple, list]] = {}
    for ranked in rankeds:
        for group, cands in ranked.items():
            table = merged.setdefault(group, {})
            for c in cands:
                grid = np.asarray(c.grid, dtype=np.uint8)
                entry = table.setdefault((grid.shape, grid.tobytes()), [grid, 0, 0.0, len(table)])
                entry[1] += c.votes
                entry[2] += c.mean_q * c.votes
    out: Ranked = {}
    for group, table in merged.items():
        cands = [(Candidate(grid, votes, q_sum / votes if votes else 0.0), first)
                 for grid, votes, q_sum, first in table.values()]
        key = {"votes_then_q": lambda cf: (-cf[0].votes, -cf[0].mean_q, cf[1]),
               "votes": lambda cf: (-cf[0].votes, cf[1]),
               "q": lambda cf: (-cf[0].mean_q, -cf[0].votes, cf[1])}[rank_by]
        out[group] = [c for c, _ in sorted(cands, key=key)]
    return out


def ranked_from_predictions(predictions: Mapping[str, Any]) -> Ranked:
    """The `Ranked` stored in a predictions.json (`trm eval`'s top candidates per test input, with votes and,
    in files written with a rescoring rule, likelihoods), in the file's order (the chosen attempts first)."""
    tasks = predictions.get("tasks") if isinstance(predictions, Mapping) else None
    if not isinstance(tasks, Mapping):
        raise ValueError("not a predictions.json: no 'tasks' mapping")
    out: Ranked = {}
    for task_id, entries in tasks.items():
        for i, entry in enumerate(entries):
            out[(task_id, i)] = [Candidate(np.asarray(c["grid"], dtype=np.uint8), int(c["votes"]),
                                           float(c["mean_q"]),
                                           None if c.get("logprob") is None else float(c["logprob"]),
                                           int(c.get("views", 0)), int(c.get("tokens", 0)))
                                 for c in entry.get("candidates", [])]
    return out


def _same_grid(a: Any, b: Any) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and bool((a == b).all())


def truth_ranks(ranked: Ranked, solutions: Mapping[str, Sequence[Any]]) -> dict[str, list[int | None]]:
    """1-based rank of the true output among each test input's candidates (None: not among them)."""
    out = {}
    for task_id, outputs in solutions.items():
        ranks = []
        for i, truth in enumerate(outputs):
            truth = np.asarray(truth)
            rank = next((r for r, c in enumerate(ranked.get((task_id, i), []), 1) if _same_grid(c.grid, truth)),
                        None)
            ranks.append(rank)
        out[task_id] = ranks
    return out


def pass_at_k(ranked: Ranked, solutions: Mapping[str, Sequence[Any]], ks: Iterable[int] = PASS_KS) -> dict:
    """pass@K as upstream: per task the fraction of its test outputs found in the first K candidates, then the
    mean over the tasks of `solutions` (a task without predictions counts 0).

    Returns {"per_task": {task_id: {"pass@K": float}}, "overall": {"pass@K": float}}.
    """
    ks = tuple(ks)
    ranks = truth_ranks(ranked, solutions)
    per_task = {t: {f"pass@{k}": (sum(r is not None and r <= k for r in rs) / len(rs) if rs else 0.0) for k in ks}
                for t, rs in ranks.items()}
    n = max(len(per_task), 1)
    overall = {f"pass@{k}": sum(v[f"pass@{k}"] for v in per_task.values()) / n for k in ks}
    return {"per_task": per_task, "overall": overall}
