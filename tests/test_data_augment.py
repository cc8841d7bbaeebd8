"""Augmentations, names and the token format (trm_core.data.augment)."""

import numpy as np
import pytest
from _data_helpers import ARC_DIR

from trm_core.data.arc import load_tasks
from trm_core.data.augment import (DIHEDRAL_INVERSE, EOS, PAD, apply_aug, aug_name, crop_tokens, crop_tokens_batch,
                                   dihedral_transform, grid_to_tokens, invert_aug, inverse_dihedral_transform,
                                   parse_aug_name, random_colour_perm)

RNG = np.random.default_rng(0)
# One random grid of every size 1..30 x 1..30.
GRIDS = [RNG.integers(0, 10, (h, w), dtype=np.uint8) for h in range(1, 31) for w in range(1, 31)]


def test_dihedral_numbering_is_upstreams():
    g = np.arange(6).reshape(2, 3)
    expected = [g, np.rot90(g, 1), np.rot90(g, 2), np.rot90(g, 3), np.fliplr(g), np.flipud(g), g.T,
                np.fliplr(np.rot90(g, 1))]
    for tid, e in enumerate(expected):
        assert np.array_equal(dihedral_transform(g, tid), e), tid
    assert np.array_equal(dihedral_transform(g, 7), g[::-1, ::-1].T)  # anti-transpose
    assert DIHEDRAL_INVERSE == [0, 3, 2, 1, 4, 5, 6, 7]


@pytest.mark.parametrize("tid", range(8))
def test_every_dihedral_transform_has_an_exact_inverse(tid):
    for g in GRIDS:
        assert np.array_equal(inverse_dihedral_transform(dihedral_transform(g, tid), tid), g)


def test_invert_aug_undoes_apply_aug_for_every_size_transform_and_random_colours():
    rng = np.random.default_rng(1)
    for i, g in enumerate(GRIDS):
        tid, perm = i % 8, random_colour_perm(rng)
        assert np.array_equal(invert_aug(apply_aug(g, tid, perm), tid, perm), g)


def test_colour_map_comes_before_geometry_and_keeps_black():
    rng = np.random.default_rng(2)
    perms = np.stack([random_colour_perm(rng) for _ in range(200)])
    assert (perms[:, 0] == 0).all() and (np.sort(perms, axis=1) == np.arange(10)).all()
    g = np.array([[0, 1], [2, 3]], dtype=np.uint8)
    perm = np.array([0, 5, 6, 7, 1, 2, 3, 4, 8, 9], dtype=np.uint8)
    assert np.array_equal(apply_aug(g, 1, perm), np.rot90(perm[g]))


def test_augmented_names_round_trip():
    rng = np.random.default_rng(3)
    for tid in range(8):
        perm = random_colour_perm(rng)
        name = aug_name("8b28cd80", tid, perm)
        task, t, p = parse_aug_name(name)
        assert (task, t) == ("8b28cd80", tid) and np.array_equal(p, perm)
    assert aug_name("8b28cd80", 3, [0, 7, 6, 8, 3, 1, 4, 9, 5, 2]) == "8b28cd80|||t3|||0768314952"


def test_a_plain_task_id_is_the_identity_and_bad_names_raise():
    task, tid, perm = parse_aug_name("8b28cd80")
    assert (task, tid) == ("8b28cd80", 0) and np.array_equal(perm, np.arange(10))
    for bad in ("x|||t8|||0123456789", "x|||t1|||0123", "x|||3|||0123456789", "x|||t1|||0123456788"):
        with pytest.raises(ValueError, match="not an augmented puzzle name"):
            parse_aug_name(bad)


def test_grid_to_tokens_places_eos_as_upstream():
    g = np.array([[1, 2], [3, 4], [5, 6]], dtype=np.uint8)
    t = grid_to_tokens(g, canvas=5, offset=(1, 2)).reshape(5, 5)
    assert np.array_equal(t, [[0, 0, 0, 0, 0],
                              [0, 0, 3, 4, 1],
                              [0, 0, 5, 6, 1],
                              [0, 0, 7, 8, 1],
                              [0, 0, 1, 1, 0]])  # corner not marked
    full = grid_to_tokens(np.zeros((4, 4), np.uint8), canvas=4)
    assert (full == 2).all()  # no EOS at the canvas border
    edge = grid_to_tokens(np.ones((2, 3), np.uint8), canvas=4, offset=(2, 0)).reshape(4, 4)
    assert (edge[2:, 3] == EOS).all() and (edge[:2] == PAD).all()
    with pytest.raises(ValueError, match="does not fit"):
        grid_to_tokens(g, canvas=4, offset=(2, 0))


@pytest.mark.parametrize("canvas", [30, 12])
def test_crop_recovers_every_grid_size(canvas):
    for g in GRIDS:
        if max(g.shape) <= canvas:
            assert np.array_equal(crop_tokens(grid_to_tokens(g, canvas), canvas), g)


def test_crop_of_a_leading_pad_or_eos_is_empty():
    assert crop_tokens(np.zeros(900, np.uint8)).shape == (0, 0)
    t = grid_to_tokens(np.ones((3, 3), np.uint8))
    t[0] = EOS
    assert crop_tokens(t).shape == (0, 0)


def test_crop_keeps_the_largest_rectangle_of_leading_colours():
    t = np.zeros((6, 6), np.uint8)
    t[0, :5] = 2      # row 0: 5 colours
    t[1, :2] = 3      # row 1: 2 colours -> width shrinks to 2
    t[2:4, :6] = 4    # later rows cannot widen it again
    # areas: 1*5=5, 2*2=4, 3*2=6, 4*2=8, then row 4 has 0 colours -> width 0
    assert crop_tokens(t.reshape(-1), canvas=6).shape == (4, 2)


def _noisy_predictions(rng, n, canvas):
    """Model-like outputs: a grid with EOS, then random corruption of a few cells."""
    out = np.empty((n, canvas * canvas), np.uint8)
    for i in range(n):
        h, w = rng.integers(1, canvas + 1, 2)
        out[i] = grid_to_tokens(rng.integers(0, 10, (h, w), dtype=np.uint8), canvas)
        k = rng.integers(0, 6)
        out[i, rng.integers(0, canvas * canvas, k)] = rng.integers(0, 12, k)
    return out


@pytest.mark.parametrize("canvas", [30, 12])
def test_vectorised_crop_matches_the_scalar_reference_on_random_tokens(canvas):
    rng = np.random.default_rng(4)
    tokens = np.concatenate([_noisy_predictions(rng, 300, canvas),
                             rng.integers(0, 12, (100, canvas * canvas), dtype=np.uint8)])
    heights, widths = crop_tokens_batch(tokens, canvas)
    for t, h, w in zip(tokens, heights, widths):
        assert crop_tokens(t, canvas).shape == (h, w)


def test_vectorised_crop_matches_the_scalar_reference_on_real_tasks():
    tasks, _ = load_tasks(ARC_DIR / "arc-agi_evaluation2_challenges.json.gz")
    grids = [g for t in tasks.values() for pair in t.train for g in pair]
    tokens = np.stack([grid_to_tokens(g) for g in grids])
    heights, widths = crop_tokens_batch(tokens)
    assert np.array_equal(heights, [g.shape[0] for g in grids])
    assert np.array_equal(widths, [g.shape[1] for g in grids])
    assert all(np.array_equal(crop_tokens(t), g) for t, g in zip(tokens[:50], grids[:50]))
