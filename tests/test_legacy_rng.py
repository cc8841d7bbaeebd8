"""LegacyStream replays numpy's legacy global RNG draw for draw: every method against RandomState itself."""

import numpy as np
import pytest

from trm_core.data.legacy_rng import LegacyStream


@pytest.mark.parametrize("seed", [0, 42, 12345])
def test_interleaved_shuffle_trials_and_offsets_match_randomstate_call_for_call(seed):
    ours, rs = LegacyStream(seed), np.random.RandomState(seed)
    for n_items, n_trials, n_pairs in ((7, 50, 3), (1, 3, 1), (30, 400, 5), (2, 1, 2)):
        # np.random.shuffle of a Python list (upstream shuffles its list of (name, task) tuples)
        items = list(range(n_items))
        rs.shuffle(items)
        assert ours.shuffle_order(n_items).tolist() == items
        # upstream's aug(): randint(0, 8), then permutation(arange(1, 10, dtype=uint8))
        tids, maps = ours.aug_trials(n_trials)
        for k in range(n_trials):
            assert tids[k] == rs.randint(0, 8)
            assert maps[k].tolist() == [0] + rs.permutation(np.arange(1, 10, dtype=np.uint8)).tolist()
        # the writer's draws: no_aug_id per puzzle, then two offsets per translated pair (bounds 0..29)
        variants = np.random.default_rng(seed).integers(0, 30, size=(2, 2, n_pairs))  # (rows/cols, variant, pair)
        variants[:, 0, 0] = 0  # a grid that fills the canvas takes no draw
        which = np.random.default_rng(seed).integers(0, 2, size=20)  # each puzzle's variant
        bounds = variants[:, which]  # (rows/cols, puzzle, pair)
        keep, rows, cols = ours.offsets(n_pairs, True, variants[0], variants[1], which)
        for k in range(20):
            assert keep[k] == rs.randint(0, n_pairs)
            for p in range(n_pairs):
                if p != keep[k]:
                    assert (rows[k, p], cols[k, p]) == (rs.randint(0, bounds[0, k, p] + 1),
                                                        rs.randint(0, bounds[1, k, p] + 1))
                else:
                    assert rows[k, p] == cols[k, p] == 0
        keep, _, _ = ours.offsets(n_pairs, False, variants[0], variants[1], which)  # test split: no_aug_id only
        assert keep.tolist() == [rs.randint(0, n_pairs) for _ in range(20)]
        assert ours.randint(13) == rs.randint(0, 13)
    # Both are at the same place in the stream.
    assert ours.randint(2**20) == rs.randint(0, 2**20)


def test_many_trials_cross_block_boundaries_exactly():
    ours, rs = LegacyStream(7), np.random.RandomState(7)
    for n in (5000, 70000):  # 70k trials need ~800k words: several refills of the word buffer
        tids, maps = ours.aug_trials(n)
        expected_t = np.empty(n, np.uint8)
        expected_m = np.empty((n, 9), np.uint8)
        for k in range(n):
            expected_t[k] = rs.randint(0, 8)
            expected_m[k] = rs.permutation(np.arange(1, 10, dtype=np.uint8))
        assert np.array_equal(tids, expected_t) and np.array_equal(maps[:, 1:], expected_m)
        assert (maps[:, 0] == 0).all()
