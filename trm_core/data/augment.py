"""ARC augmentations with exact inverses, and grid <-> token sequences.

Everything here follows upstream TRM (`dataset/common.py`, `dataset/build_arc_dataset.py`, `evaluators/arc.py`)
so data and identifiers built by either tool mean the same thing:

- the 8 dihedral transforms with upstream's numbering (numpy `rot90` is counter-clockwise) and inverse table;
- colour permutations that keep black (0) fixed, applied before the geometry;
- augmented-puzzle names `task|||t{k}|||{perm digits}` (digit i = new colour of old colour i);
- tokens PAD 0, EOS 1, colour c -> c + 2 on a `canvas x canvas` grid, flattened row-major, and upstream's crop.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DIHEDRAL_INVERSE = [0, 3, 2, 1, 4, 5, 6, 7]
# Transforms 1, 3, 6 and 7 swap height and width.
SWAPS_AXES = np.array([False, True, False, True, False, False, True, True])

PAD, EOS, COLOR_OFFSET = 0, 1, 2
NUM_COLOURS = 10
VOCAB_SIZE = COLOR_OFFSET + NUM_COLOURS
IDENTITY_PERM = np.arange(NUM_COLOURS, dtype=np.uint8)
_SEP = "|||"


def dihedral_transform(grid: np.ndarray, tid: int) -> np.ndarray:
    """Apply dihedral transform `tid` (0..7, upstream numbering) to the last two axes of `grid`."""
    axes = (-2, -1)
    if tid == 0:
        return grid
    if tid in (1, 2, 3):
        return np.rot90(grid, k=tid, axes=axes)
    if tid == 4:
        return np.flip(grid, axis=-1)
    if tid == 5:
        return np.flip(grid, axis=-2)
    if tid == 6:
        return np.swapaxes(grid, -2, -1)
    if tid == 7:
        return np.flip(np.rot90(grid, k=1, axes=axes), axis=-1)
    raise ValueError(f"dihedral transform id must be 0..7, got {tid!r}")


def inverse_dihedral_transform(grid: np.ndarray, tid: int) -> np.ndarray:
    """Undo `dihedral_transform(grid, tid)`."""
    if not 0 <= tid <= 7:
        raise ValueError(f"dihedral transform id must be 0..7, got {tid!r}")
    return dihedral_transform(grid, DIHEDRAL_INVERSE[tid])


def random_colour_perm(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random colour map (length 10, uint8) that keeps black (0) fixed."""
    return np.concatenate([[0], rng.permutation(NUM_COLOURS - 1) + 1]).astype(np.uint8)


def aug_name(task_id: str, tid: int, perm: np.ndarray) -> str:
    """Upstream's name of an augmented puzzle, e.g. `8b28cd80|||t3|||0768314952`."""
    digits = (np.asarray(perm, dtype=np.uint8) + ord("0")).tobytes().decode()
    return f"{task_id}{_SEP}t{tid}{_SEP}{digits}"


def parse_aug_name(name: str) -> tuple[str, int, np.ndarray]:
    """Inverse of `aug_name`; a name without `|||` (an original puzzle) gives transform 0 and the identity map."""
    if _SEP not in name:
        return name, 0, IDENTITY_PERM.copy()
    # rsplit: the last two fields are the augmentation, whatever the task id contains.
    task_id, t_field, perm_field = name.rsplit(_SEP, 2)
    if (len(t_field) != 2 or t_field[0] != "t" or t_field[1] not in "01234567"
            or len(perm_field) != NUM_COLOURS or sorted(perm_field) != list("0123456789")):
        raise ValueError(f"not an augmented puzzle name (task|||t<0-7>|||<10 digits>): {name!r}")
    return task_id, int(t_field[1]), np.array([int(c) for c in perm_field], dtype=np.uint8)


def parse_aug_names(names: Sequence[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """`parse_aug_name` for many names at once: (task ids, transform ids (n,) int8, colour maps (n, 10) uint8).

    One `rsplit` per name; the digits are decoded and checked with array ops (a per-name numpy call would
    cost seconds on ARC-AGI-2's ~120k test puzzles). A malformed name raises parse_aug_name's ValueError.
    """
    task_ids, t_fields, perm_fields = [], [], []
    for name in names:
        parts = name.rsplit("|||", 2)
        if len(parts) != 3:  # an original puzzle (or a malformed name: parse_aug_name decides)
            task_id, tid, perm = parse_aug_name(name)
            parts = [task_id, f"t{tid}", "".join(str(int(c)) for c in perm)]
        task_ids.append(parts[0])
        t_fields.append(parts[1])
        perm_fields.append(parts[2])
    t = np.frombuffer("".join(t_fields).encode("ascii", "replace"), np.uint8)
    p = np.frombuffer("".join(perm_fields).encode("ascii", "replace"), np.uint8)
    if len(t) == 2 * len(names) and len(p) == 10 * len(names):
        t, p = t.reshape(-1, 2), p.reshape(-1, 10) - ord("0")
        bad = ((t[:, 0] != ord("t")) | (t[:, 1] < ord("0")) | (t[:, 1] > ord("7"))
               | (np.sort(p, axis=1) != np.arange(10)).any(axis=1))
    else:
        bad = np.ones(len(names), dtype=bool)
    if bad.any():
        for name in names:  # find the first bad name and let parse_aug_name say what is wrong with it
            parse_aug_name(name)
        raise AssertionError("parse_aug_names and parse_aug_name disagree")
    return task_ids, (t[:, 1] - ord("0")).astype(np.int8), p.astype(np.uint8)


def apply_aug(grid: np.ndarray, tid: int, perm: np.ndarray) -> np.ndarray:
    """Colour map first, then geometry, as upstream."""
    return dihedral_transform(np.asarray(perm, dtype=np.uint8)[grid], tid)


def invert_aug(grid: np.ndarray, tid: int, perm: np.ndarray) -> np.ndarray:
    """Exact inverse of `apply_aug(grid, tid, perm)`."""
    inv_perm = np.argsort(np.asarray(perm)).astype(np.uint8)
    return inv_perm[inverse_dihedral_transform(grid, tid)]


def grid_to_tokens(grid: np.ndarray, canvas: int = 30, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Encode a grid as a flat (canvas*canvas,) uint8 token sequence with its top-left corner at `offset`.

    EOS marks the row just below the grid (within its columns) and the column just right of it (within its
    rows), unless that falls outside the canvas; the corner cell is not marked (upstream's layout).
    """
    h, w = grid.shape
    r, c = offset
    if not (0 <= r and 0 <= c and r + h <= canvas and c + w <= canvas):
        raise ValueError(f"a {h}x{w} grid at offset {offset} does not fit a {canvas}x{canvas} canvas")
    out = np.full((canvas, canvas), PAD, dtype=np.uint8)
    out[r:r + h, c:c + w] = grid.astype(np.uint8) + COLOR_OFFSET
    if r + h < canvas:
        out[r + h, c:c + w] = EOS
    if c + w < canvas:
        out[r:r + h, c + w] = EOS
    return out.reshape(-1)


def crop_tokens_batch(tokens: np.ndarray, canvas: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised upstream `_crop` sizes: (heights (N,), widths (N,)) for tokens (N, canvas*canvas).

    Upstream scans row r for its run of leading colour tokens, lets the width only shrink (a running minimum)
    and keeps the (rows, width) of largest area, the first one on ties; a leading PAD/EOS gives 0x0.
    """
    tokens = np.asarray(tokens).reshape(-1, canvas, canvas)  # (N, rows, cols)
    is_colour = (tokens >= COLOR_OFFSET) & (tokens < VOCAB_SIZE)
    run = np.where(is_colour.all(axis=2), canvas, is_colour.argmin(axis=2))  # (N, rows) leading colour run
    width = np.minimum.accumulate(run, axis=1)  # (N, rows) width of the rectangle using rows 0..r
    area = width * np.arange(1, canvas + 1)
    best = area.argmax(axis=1)  # first maximum, as upstream's strict `>` update
    rows = np.arange(len(tokens))
    found = area[rows, best] > 0
    heights = np.where(found, best + 1, 0)
    widths = np.where(found, width[rows, best], 0)
    return heights.astype(np.int64), widths.astype(np.int64)


def crop_tokens(tokens: np.ndarray, canvas: int = 30) -> np.ndarray:
    """Upstream `_crop`: decode one (canvas*canvas,) token sequence into a uint8 grid (possibly 0x0).

    A plain loop kept as the readable reference for `crop_tokens_batch` (tests check they agree).
    """
    grid = np.asarray(tokens).reshape(canvas, canvas)
    best_area, best = 0, (0, 0)
    num_c = canvas
    for num_r in range(1, canvas + 1):
        for c in range(num_c):
            if not COLOR_OFFSET <= grid[num_r - 1, c] < VOCAB_SIZE:
                num_c = c
                break
        if num_r * num_c > best_area:
            best_area, best = num_r * num_c, (num_r, num_c)
    return (grid[: best[0], : best[1]].astype(np.int64) - COLOR_OFFSET).astype(np.uint8)
