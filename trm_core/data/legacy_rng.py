"""numpy's legacy global RNG, replayed draw for draw but in bulk: upstream's builder without its Python loop.

Upstream TRM's `dataset/build_arc_dataset.py` seeds the legacy global generator (`np.random.seed(42)`, a
`RandomState` over MT19937) and calls `shuffle`, `randint` and `permutation` on it in a fixed order. Its puzzle
identifiers (which rows of a published checkpoint's embedding table mean which augmented task) follow from that
order, so reproducing them means consuming the same stream the same way.

Every one of those calls reduces to 32-bit words of the MT19937 stream by masked rejection (numpy's
`random_interval` and `buffered_bounded_masked_uint32`): a draw in 0..m takes `word & mask`, with mask the
smallest 2^k - 1 >= m, and rejects it while it is > m; m == 0 takes no word at all. So:
- `randint(0, high)` is one draw in 0..high-1 (legacy randint is masked, not Lemire);
- `shuffle(x)` of n items is draws in 0..i for i = n-1 down to 1, swapping x[i] and x[j];
- `permutation(arange(1, 10))` is that shuffle of 9 items.
`LegacyStream` draws the words in blocks from a `RandomState` and consumes them here; `tests/test_legacy_rng.py`
checks every method against `RandomState` itself, draw for draw.
"""

from __future__ import annotations

import numpy as np

_BLOCK = 1 << 16  # words fetched at a time
_PERM_SIZE = 9  # upstream permutes colours 1..9 (0 stays black)


def _mask(m: int) -> int:
    """Smallest 2^k - 1 >= m (numpy's `gen_mask`)."""
    return (1 << int(m).bit_length()) - 1


_MASKS = [_mask(m) for m in range(64)]


class LegacyStream:
    """The word stream of `np.random.RandomState(seed)`, consumed exactly as upstream's builder consumes it."""

    def __init__(self, seed: int) -> None:
        self._rs = np.random.RandomState(seed)
        self._buf = np.zeros(0, dtype=np.uint32)
        self._pos = 0
        self.words_used = 0

    # -- the word buffer -----------------------------------------------------------------------------------
    def _ensure(self, n: int) -> None:
        """At least n unread words in the buffer."""
        have = len(self._buf) - self._pos
        if have < n:
            # randint(0, 2**32, uint32) returns raw words, one each (the full-range case takes no mask).
            more = self._rs.randint(0, 2**32, size=max(n - have, _BLOCK), dtype=np.uint32)
            self._buf = np.concatenate([self._buf[self._pos:], more])
            self._pos = 0

    def _advance(self, n: int) -> None:
        self._pos += n
        self.words_used += n

    # -- scalar draws ----------------------------------------------------------------------------------------
    def interval(self, m: int) -> int:
        """A draw in 0..m (numpy's `random_interval(m)`; `randint(0, m + 1)` on the legacy generator)."""
        if m == 0:
            return 0
        mask = _mask(m)
        while True:
            self._ensure(1)
            value = int(self._buf[self._pos]) & mask
            self._advance(1)
            if value <= m:
                return value

    def randint(self, high: int) -> int:
        """`np.random.randint(0, high)` (high >= 1)."""
        if high < 1:
            raise ValueError(f"randint: high must be >= 1, got {high}")
        return self.interval(high - 1)

    def shuffle_order(self, n: int) -> np.ndarray:
        """The order `np.random.shuffle(items)` leaves a list of n items in: items[order[k]] ends up at k."""
        order = np.arange(n)
        for i in range(n - 1, 0, -1):
            j = self.interval(i)
            order[i], order[j] = order[j], order[i]
        return order

    # -- bulk draws ------------------------------------------------------------------------------------------
    def aug_trials(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """n calls of upstream's `aug()`: `randint(0, 8)` then `permutation(arange(1, 10))`, vectorised.

        Returns (tids (n,) uint8, colour maps (n, 10) uint8 with map[0] = 0). The trial boundaries are found
        for every possible start position at once (8 gathers over the block), then chained from the current
        position: a Python step per trial instead of ten numpy calls.
        """
        if n <= 0:
            return np.zeros(0, np.uint8), np.zeros((0, 10), np.uint8)
        size = 12 * n + 64  # ~11.2 words per trial on average
        while True:
            self._ensure(size)
            words = self._buf[self._pos:self._pos + size]
            starts, tids, draws = self._trial_draws(words, n)
            if starts is not None:
                break
            size *= 2
        perm = np.tile(np.arange(1, 10, dtype=np.uint8), (n, 1))  # (n, 9)
        rows = np.arange(n)
        for k, i in enumerate(range(_PERM_SIZE - 1, 0, -1)):  # Fisher-Yates from the back, as numpy's shuffle
            j = draws[:, k]
            held = perm[rows, j].copy()
            perm[rows, j] = perm[:, i]
            perm[:, i] = held
        maps = np.concatenate([np.zeros((n, 1), np.uint8), perm], axis=1)
        return tids, maps

    def _trial_draws(self, words: np.ndarray, n: int):
        """(starts, tids, draws (n, 8)) of n trials read from `words` (None if the block is too short);
        advances the stream past them."""
        size = len(words)
        positions = np.arange(size + 1)
        nxt = {}  # bound -> index of the first accepted word at or after each position (size: none left)
        for m in range(1, _PERM_SIZE):
            mask = _MASKS[m]
            if mask == m:  # every word is accepted
                nxt[m] = positions
            else:
                ok = np.append((words & mask) <= m, True)
                nxt[m] = np.minimum.accumulate(np.where(ok, positions, size)[::-1])[::-1]
        # End of a trial started at each position (1 word for the transform, then 8 shuffle draws).
        end = np.minimum(positions + 1, size)
        for m in range(_PERM_SIZE - 1, 0, -1):
            end = np.minimum(nxt[m][end] + 1, size)
        end_list = end.tolist()
        starts, p = [], 0
        for _ in range(n):
            if p >= size:
                return None, None, None
            starts.append(p)
            p = end_list[p]
        if p >= size:  # the last trial may have hit the end of the block
            return None, None, None
        starts = np.array(starts)
        tids = (words[starts] & 7).astype(np.uint8)
        draws = np.empty((n, _PERM_SIZE - 1), dtype=np.intp)
        pos = starts + 1
        for k, m in enumerate(range(_PERM_SIZE - 1, 0, -1)):
            at = nxt[m][pos]
            draws[:, k] = words[at] & _MASKS[m]
            pos = at + 1
        self._advance(p)
        return starts, tids, draws

    def offsets(self, n_pairs: int, translate: bool, free_rows: np.ndarray, free_cols: np.ndarray,
                which: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Upstream's per-puzzle draws when it writes a split, for K puzzles of n_pairs pairs each:
        `no_aug_id = randint(0, n_pairs)`, then, if `translate`, for every other pair p
        `randint(0, free_rows[v, p] + 1)` and `randint(0, free_cols[v, p] + 1)`, v = which[k] (a task's puzzles
        differ only in whether their transform swaps the axes: (V, n_pairs) free rows / columns per variant).

        Returns (no_aug (K,), rows (K, n_pairs), cols (K, n_pairs)); pairs that are not translated get 0.
        """
        free_rows, free_cols = np.asarray(free_rows), np.asarray(free_cols)
        top = max(n_pairs, int(free_rows.max(initial=0)), int(free_cols.max(initial=0)))
        masks = _MASKS if top < len(_MASKS) else [_mask(m) for m in range(top + 1)]
        # programs[v][a]: (bound, mask, output slot) of each draw after no_aug_id = a, in upstream's order;
        # a bound of 0 (the grid fills the canvas) takes no word, so it is left out.
        programs = [[[(int(bound), masks[int(bound)], 2 * p + io) for p in range(n_pairs) if p != a
                      for io, bound in ((0, rows[p]), (1, cols[p])) if bound] if translate else []
                     for a in range(n_pairs)] for rows, cols in zip(free_rows, free_cols)]
        which = np.asarray(which).reshape(-1)
        draws_per_puzzle = 1 + (2 * (n_pairs - 1) if translate else 0)
        budget = 2 * len(which) * draws_per_puzzle + 64  # a draw takes < 2 words on average
        while True:
            self._ensure(budget)
            words = self._buf[self._pos:self._pos + budget].tolist()
            try:
                keep, slots, used = _replay_offsets(words, masks[n_pairs - 1], n_pairs, programs, which.tolist())
                break
            except IndexError:  # ran past the block: retry with a larger one (nothing was consumed)
                budget *= 2
        self._advance(used)
        slots = np.array(slots, dtype=np.int64).reshape(len(which), n_pairs, 2)
        return np.array(keep, dtype=np.int64), slots[:, :, 0], slots[:, :, 1]


def _replay_offsets(words: list[int], mask_keep: int, n_pairs: int, programs: list, which: list[int]):
    """The scalar loop behind `LegacyStream.offsets` on plain Python ints (~10x faster than RandomState calls).

    Returns (no_aug per puzzle, the drawn offsets as a flat list (K * n_pairs * 2: row, col), words used)."""
    pos = 0
    keep: list[int] = []
    slots = [0] * (len(which) * n_pairs * 2)
    m_keep = n_pairs - 1
    for k, v in enumerate(which):
        a = 0
        if m_keep:
            a = words[pos] & mask_keep
            pos += 1
            while a > m_keep:
                a = words[pos] & mask_keep
                pos += 1
        keep.append(a)
        base = k * n_pairs * 2
        for m, mask, slot in programs[v][a]:
            value = words[pos] & mask
            pos += 1
            while value > m:
                value = words[pos] & mask
                pos += 1
            slots[base + slot] = value
    return keep, slots, pos


__all__ = ["LegacyStream"]
