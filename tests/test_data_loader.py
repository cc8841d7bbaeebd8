"""The data loader (trm_core.data.dataset): seeding, rank sharding, resume, caps, test coverage, multi-path."""

import numpy as np
import pytest
import torch
from _data_helpers import build_small, load_split

from trm_core.data.dataset import DatasetMetadata, PuzzleDataset


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("loader")
    build_small(out, num_aug=8)
    return out


def _cat(batches, key):
    return torch.cat([b[key] for b in batches])


def test_batches_have_the_documented_keys_dtypes_and_ignore_labels(data):
    ds = PuzzleDataset(data, "train", global_batch_size=16)
    b = next(ds.iter_train(0))
    assert b["inputs"].dtype == torch.int32 and b["inputs"].shape == (16, 900)
    assert b["labels"].dtype == torch.int64 and b["puzzle_identifiers"].dtype == torch.int32
    assert (b["labels"] != 0).all() and (b["labels"] == -100).any()  # PAD -> -100
    assert ((b["labels"] == -100) == (b["inputs"] == 0)).float().mean() > 0.5
    assert isinstance(ds._parts[0].inputs, np.memmap)


def test_two_ranks_split_every_global_batch_with_no_duplicate_or_missing_example(data):
    whole = PuzzleDataset(data, "train", global_batch_size=16, seed=5)
    ranks = [PuzzleDataset(data, "train", global_batch_size=16, seed=5, rank=r, world_size=2) for r in range(2)]
    assert ranks[0].local_batch_size == 8
    n = whole.batches_per_epoch(3)
    assert n > 2 and all(r.batches_per_epoch(3) == n for r in ranks)
    for g, r0, r1 in zip(whole.iter_train(3), ranks[0].iter_train(3), ranks[1].iter_train(3)):
        for key in ("inputs", "labels", "puzzle_identifiers"):
            assert torch.equal(g[key], torch.cat([r0[key], r1[key]]))
    rows, _ = whole._epoch_plan(3)
    assert len(np.unique(rows)) == len(rows)  # no example twice in an epoch


def test_an_epoch_visits_every_group_once_with_one_puzzle(data):
    ds = PuzzleDataset(data, "train", global_batch_size=4)
    rows, pids = ds._epoch_plan(0)
    a = load_split(data, "train")
    groups = np.searchsorted(a["group_indices"], np.searchsorted(a["puzzle_indices"], rows, "right") - 1, "right")
    # every group's examples are all there (no cap), from a single puzzle of that group
    assert len(set(groups)) == 23 and len(rows) == sum(
        a["puzzle_indices"][a["group_indices"][g] + 1] - a["puzzle_indices"][a["group_indices"][g]] for g in range(23))
    for g in set(groups):
        assert len(set(pids[groups == g])) == 1


def test_order_is_seeded_by_seed_and_epoch(data):
    def first(seed, epoch):
        return next(PuzzleDataset(data, "train", global_batch_size=16, seed=seed).iter_train(epoch))["inputs"]
    assert torch.equal(first(0, 0), first(0, 0))
    assert not torch.equal(first(0, 0), first(0, 1))
    assert not torch.equal(first(0, 0), first(1, 0))


def test_start_batch_resumes_exactly(data):
    ds = PuzzleDataset(data, "train", global_batch_size=8, world_size=2, rank=1)
    full = list(ds.iter_train(2))
    resumed = list(ds.iter_train(2, start_batch=3))
    assert len(resumed) == len(full) - 3
    assert all(torch.equal(a["inputs"], b["inputs"]) for a, b in zip(full[3:], resumed))
    with pytest.raises(ValueError, match="start_batch"):
        next(ds.iter_train(2, start_batch=len(full) + 1))


def test_max_examples_per_puzzle_caps_each_puzzles_share(data):
    ds = PuzzleDataset(data, "train", global_batch_size=4, max_examples_per_puzzle=2)
    _, pids = ds._epoch_plan(0)
    assert np.bincount(pids).max() == 2 and len(pids) == 23 * 2
    assert ds.batches_per_epoch(0) == 23 * 2 // 4
    assert ds.total_train_steps(10) == int(10 * 23 * ds.metadata.mean_puzzle_examples / 4)


@pytest.mark.parametrize("cap", [None, 0, 3])
def test_test_iterator_covers_every_example_once_across_two_ranks(data, cap):
    ranks = [PuzzleDataset(data, "test", global_batch_size=6, world_size=2, rank=r, max_eval_augmentations=cap)
             for r in range(2)]
    batches = [list(r.iter_test()) for r in ranks]
    assert len(batches[0]) == len(batches[1]) == ranks[0].test_batches()
    index = torch.cat([_cat(b, "example_index") for b in batches])
    seen = index[index >= 0].numpy()
    a = load_split(data, "test")
    if cap is None:
        expected = np.arange(len(a["inputs"]))
    else:  # the original and the first `cap` augmented puzzles of each group
        g = a["group_indices"]
        keep = [p for g0, g1 in zip(g, g[1:]) for p in range(g0, min(g1, g0 + 1 + cap))]
        expected = np.concatenate([np.arange(a["puzzle_indices"][p], a["puzzle_indices"][p + 1]) for p in keep])
    assert np.array_equal(np.sort(seen), expected) and ranks[0].num_test_examples == len(expected)
    for b in batches[0] + batches[1]:  # rows are the examples they claim, padding is blank
        real = b["example_index"] >= 0
        assert torch.equal(b["inputs"][real], torch.from_numpy(a["inputs"][b["example_index"][real].numpy()]).int())
        assert (b["puzzle_identifiers"][~real] == 0).all() and (b["labels"][~real] == -100).all()
        pidx = np.searchsorted(a["puzzle_indices"], b["example_index"][real].numpy(), "right") - 1
        assert np.array_equal(b["puzzle_identifiers"][real].numpy(), a["puzzle_identifiers"][pidx])


def test_two_paths_merge_into_one_pool_when_identifiers_are_disjoint(data, tmp_path):
    build_small(tmp_path / "second", num_aug=1, puzzle_identifiers_start=1000)
    ds = PuzzleDataset([data, tmp_path / "second"], "train", global_batch_size=8)
    one = DatasetMetadata.load(data / "train" / "dataset.json")
    assert ds.metadata.total_groups == 46
    assert ds.metadata.num_puzzle_identifiers == one.num_puzzle_identifiers + 1000 + 46
    _, pids = ds._epoch_plan(0)
    assert (pids >= 1000).any() and (pids < 1000).any()
    assert sum(len(b["inputs"]) for b in ds.iter_train(0)) == 8 * ds.batches_per_epoch(0)


def test_colliding_identifiers_or_different_canvases_are_refused(data, tmp_path):
    build_small(tmp_path / "clash", num_aug=1)
    with pytest.raises(ValueError, match="overlap; build the second with --puzzle-identifiers-start"):
        PuzzleDataset([data, tmp_path / "clash"], "train", global_batch_size=8)
    build_small(tmp_path / "c12", num_aug=1, canvas_size=12, puzzle_identifiers_start=5000)
    with pytest.raises(ValueError, match="datasets disagree on seq_len"):
        PuzzleDataset([data, tmp_path / "c12"], "train", global_batch_size=8)


def test_bad_arguments_raise_value_errors(data, tmp_path):
    with pytest.raises(ValueError, match=r"global_batch_size \(10\) must be a positive multiple of world_size \(4\)"):
        PuzzleDataset(data, "train", global_batch_size=10, world_size=4)
    with pytest.raises(ValueError, match="need 0 <= rank < world_size"):
        PuzzleDataset(data, "train", global_batch_size=8, world_size=2, rank=2)
    with pytest.raises(ValueError, match="dataset.json: cannot read dataset metadata"):
        PuzzleDataset(tmp_path, "train", global_batch_size=8)
