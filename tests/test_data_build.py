"""The dataset builder (trm_core.data.build) on real tasks: layout, routing, exact decoding, determinism.

Byte-identity with upstream's own builder output is in tests/test_upstream_compat.py."""

import json

import numpy as np
import pytest
from _data_helpers import ARC_DIR, ARC_PREFIX, BAD_DIR, build_small, load_split, write_subset

from trm_core.data.arc import load_tasks
from trm_core.data.augment import apply_aug, crop_tokens, grid_to_tokens, invert_aug, parse_aug_name
from trm_core.data.build import build_dataset, main, subset_name_of

FILES = ["identifiers.json", "test_puzzles.json"] + [
    f"{split}/{name}" for split in ("train", "test") for name in
    ("dataset.json", "all__inputs.npy", "all__labels.npy", "all__puzzle_identifiers.npy",
     "all__puzzle_indices.npy", "all__group_indices.npy")]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("built")
    return out, build_small(out)


def test_writes_upstreams_layout_with_its_dtypes_and_metadata(built):
    out, summary = built
    assert all((out / f).is_file() for f in FILES)
    for split in ("train", "test"):
        a = load_split(out, split)
        assert a["inputs"].dtype == np.uint8 and a["inputs"].shape[1] == 900
        assert a["labels"].shape == a["inputs"].shape
        assert a["puzzle_identifiers"].dtype == np.int32
        assert a["puzzle_indices"].dtype == np.int32 and a["group_indices"].dtype == np.int32
        assert a["puzzle_indices"][0] == 0 and a["puzzle_indices"][-1] == len(a["inputs"])
        assert a["group_indices"][-1] == len(a["puzzle_identifiers"])
        meta = json.loads((out / split / "dataset.json").read_text())
        # upstream's PuzzleDatasetMetadata fields, in its order (canvas_size only when it is not 30)
        assert list(meta.items()) == [
            ("pad_id", 0), ("ignore_label_id", 0), ("blank_identifier_id", 0), ("vocab_size", 12), ("seq_len", 900),
            ("num_puzzle_identifiers", summary["num_puzzle_identifiers"]), ("total_groups", 23),
            ("mean_puzzle_examples", meta["mean_puzzle_examples"]), ("total_puzzles", len(a["puzzle_identifiers"])),
            ("sets", ["all"])]
        assert meta["mean_puzzle_examples"] == pytest.approx(len(a["inputs"]) / meta["total_puzzles"])
    # 23 tasks x (original + 4 augmentations), unless a task has too few distinct augmentations.
    assert summary["train"]["puzzles"] == 115 and summary["num_puzzle_identifiers"] == 116


def test_rebuild_is_byte_identical_and_independent_of_chunk_size(built, tmp_path):
    out, _ = built
    build_small(tmp_path / "again", chunk_rows=7)
    for f in FILES:
        assert (out / f).read_bytes() == (tmp_path / "again" / f).read_bytes(), f
    build_small(tmp_path / "other_seed", seed=43)
    f = "train/all__inputs.npy"
    assert (out / f).read_bytes() != (tmp_path / "other_seed" / f).read_bytes()


def _decode(tokens: np.ndarray) -> np.ndarray:
    """Crop a grid placed anywhere on the canvas, checking that its tokens are exactly upstream's encoding.

    The grid's top-left corner is its first colour cell; shifting it back to (0, 0) lets upstream's crop apply.
    """
    t = tokens.reshape(30, 30)
    r, c = (int(x.min()) for x in np.nonzero(t >= 2))
    shifted = np.zeros_like(t)
    shifted[: 30 - r, : 30 - c] = t[r:, c:]
    grid = crop_tokens(shifted.reshape(-1))
    assert np.array_equal(grid_to_tokens(grid, offset=(r, c)), tokens)  # EOS marks included
    return grid


@pytest.mark.parametrize("split", ["train", "test"])
def test_decoding_every_example_with_its_puzzles_inverse_gives_the_original_pair(built, split):
    out, _ = built
    names = json.loads((out / "identifiers.json").read_text())
    tasks, _ = load_tasks(ARC_DIR / "arc-agi_manual_evaluation_challenges.json.gz",
                          ARC_DIR / "arc-agi_manual_evaluation_solutions.json.gz")
    a = load_split(out, split)
    for p, pid in enumerate(a["puzzle_identifiers"]):
        task_id, tid, perm = parse_aug_name(names[pid])
        task = tasks[task_id]
        pairs = task.train if split == "train" else list(zip(task.test_inputs, task.test_outputs))
        rows = range(a["puzzle_indices"][p], a["puzzle_indices"][p + 1])
        assert len(rows) == len(pairs)
        for row, (inp, outp) in zip(rows, pairs):
            assert np.array_equal(invert_aug(_decode(a["inputs"][row]), tid, perm), inp)
            assert np.array_equal(invert_aug(_decode(a["labels"][row]), tid, perm), outp)
    if split == "test":  # never translated
        assert (a["inputs"].reshape(-1, 30, 30)[:, 0, 0] >= 2).all()


def test_train_rows_are_translated_except_one_pair_per_puzzle(built):
    out, _ = built
    a = load_split(out, "train")
    at_origin = a["inputs"].reshape(-1, 30, 30)[:, 0, 0] >= 2
    per_puzzle = np.add.reduceat(at_origin, a["puzzle_indices"][:-1])
    assert (per_puzzle >= 1).all() and at_origin.mean() < 0.9


def test_augmented_puzzles_of_a_task_are_distinct(built):
    # Distinct as tasks: as multisets of (input, output) pairs over both splits (upstream's puzzle_hash).
    # Rows alone can repeat: two versions may agree on the test pairs and differ on the demonstrations.
    out, _ = built
    names = json.loads((out / "identifiers.json").read_text())
    tasks, _ = load_tasks(ARC_DIR / "arc-agi_manual_evaluation_challenges.json.gz",
                          ARC_DIR / "arc-agi_manual_evaluation_solutions.json.gz")
    a = load_split(out, "train")
    g = a["group_indices"]
    for k in range(len(g) - 1):
        versions = set()
        for pid in a["puzzle_identifiers"][g[k]: g[k + 1]]:
            task_id, tid, perm = parse_aug_name(names[pid])
            task = tasks[task_id]
            pairs = task.train + list(zip(task.test_inputs, task.test_outputs))
            versions.add(tuple(sorted((apply_aug(i, tid, perm).tobytes() + bytes(apply_aug(i, tid, perm).shape),
                                       apply_aug(o, tid, perm).tobytes() + bytes(apply_aug(o, tid, perm).shape))
                                      for i, o in pairs)))
        assert len(versions) == g[k + 1] - g[k]


def test_identifiers_json_names_every_puzzle_and_starts_with_blank(built):
    out, _ = built
    names = json.loads((out / "identifiers.json").read_text())
    a = load_split(out, "train")
    assert names[0] == "<blank>" and len(names) == 116
    assert np.array_equal(a["puzzle_identifiers"], np.arange(1, 116))
    originals = [names[i] for i in a["puzzle_identifiers"][a["group_indices"][:-1]]]
    assert all("|||" not in n for n in originals)
    assert np.array_equal(load_split(out, "test")["puzzle_identifiers"], a["puzzle_identifiers"])


def test_routing_follows_the_fork(tmp_path):
    prefix = tmp_path / "x"
    write_subset(prefix, "a", "evaluation2", 3)
    write_subset(prefix, "b", "concept", 2)
    write_subset(prefix, "c", "training2", 2)
    s = build_dataset(str(prefix), tmp_path / "out", ["a", "b", "c"], test_set_names=["a"],
                      train_only_subsets=["c"], num_aug=2, progress=False)
    tasks = {sub: load_tasks(f"{prefix}_{sub}_challenges.json")[0] for sub in "abc"}
    n_train = sum(len(t.train) for t in tasks["a"].values())
    n_train += sum(len(t.train) + len(t.test_inputs) for sub in "bc" for t in tasks[sub].values())
    assert s["train"]["examples"] == 3 * n_train  # original + 2 augmentations of each
    assert s["test"]["groups"] == 3
    # upstream shuffles each subset's tasks, so test_puzzles.json lists them in the shuffled order
    assert sorted(json.loads((tmp_path / "out" / "test_puzzles.json").read_text())) == sorted(tasks["a"])
    # No test set named: every subset but the train-only one sends its test pairs to test/.
    s = build_dataset(str(prefix), tmp_path / "out2", ["a", "b", "c"], train_only_subsets=["c"], num_aug=0,
                      progress=False)
    assert s["test"]["groups"] == 5


def test_kaggle_file_without_solutions_gets_dummy_labels_via_challenges_flag(tmp_path):
    write_subset(tmp_path / "arc-agi", "test", "test", 3, with_solutions=False)
    ch = tmp_path / "arc-agi_test_challenges.json"
    assert subset_name_of(ch) == "test" and subset_name_of("a/arc-agi_manual_evaluation_challenges.json.gz") == \
        "manual_evaluation"
    assert main(["--challenges", str(ch), "--num-aug", "2", "--output-dir", str(tmp_path / "out"),
                 "--no-progress"]) == 0
    puzzles = json.loads((tmp_path / "out" / "test_puzzles.json").read_text())
    assert len(puzzles) == 3 and all(p["output"] == [[0]] for t in puzzles.values() for p in t["test"])
    assert (load_split(tmp_path / "out", "test")["labels"][:, 0] == 2).all()  # colour 0 at (0, 0)


def test_unsolved_test_pairs_train_on_dummy_labels_as_upstream_unless_dropped(tmp_path):
    write_subset(tmp_path / "k", "hidden", "test", 2, with_solutions=False)
    write_subset(tmp_path / "k", "ev", "evaluation2", 2)
    args = (str(tmp_path / "k"), tmp_path / "out", ["hidden", "ev"])
    s = build_dataset(*args, test_set_names=["ev"], num_aug=0, progress=False)  # upstream: [[0]] labels in train/
    assert s["test_pairs_without_solution_dropped_from_train"] == 0
    assert any("dummy [[0]] labels" in w and "--unsolved-test-pairs drop" in w for w in s["warnings"])
    dropped = build_dataset(*args, test_set_names=["ev"], num_aug=0, progress=False, unsolved_test_pairs="drop")
    n = dropped["test_pairs_without_solution_dropped_from_train"]
    assert n > 0 and dropped["train"]["examples"] == s["train"]["examples"] - n
    per_task = build_dataset(*args, test_set_names=["ev"], num_aug=0, progress=False, rng_scheme="per-task")
    assert per_task["test_pairs_without_solution_dropped_from_train"] == n  # that scheme's default: drop


def test_skip_invalid_builds_the_valid_tasks(tmp_path, capsys):
    src = BAD_DIR / "ragged_rows_challenges.json"
    args = ["--challenges", str(src), "--num-aug", "1", "--output-dir", str(tmp_path / "o"), "--no-progress"]
    assert main(args) == 2
    assert "task 00576224: train[1].output: row 3 has 4 cells" in capsys.readouterr().err
    assert main(args + ["--skip-invalid"]) == 0
    assert "skipped: ragged_rows_challenges.json: task 00576224" in capsys.readouterr().err
    assert json.loads((tmp_path / "o" / "train" / "dataset.json").read_text())["total_groups"] == 1


def test_small_canvas_skips_tasks_that_do_not_fit(tmp_path):
    s = build_small(tmp_path / "c12", canvas_size=12, num_aug=1)
    meta = json.loads((tmp_path / "c12" / "train" / "dataset.json").read_text())
    assert meta["seq_len"] == 144 and meta["canvas_size"] == 12
    assert 0 < meta["total_groups"] < 23 and len(s["problems"]) == 23 - meta["total_groups"]
    assert load_split(tmp_path / "c12", "train")["inputs"].shape[1] == 144


def test_without_colour_permutation_a_task_gets_its_distinct_dihedral_versions_only(tmp_path):
    build_small(tmp_path / "d", num_aug=100, colour_permutation=False, enable_train_translation=False)
    names = json.loads((tmp_path / "d" / "identifiers.json").read_text())[1:]
    a = load_split(tmp_path / "d", "train")
    g = a["group_indices"]
    for k in range(len(g) - 1):
        group = [names[i - 1] for i in a["puzzle_identifiers"][g[k]: g[k + 1]]]
        assert 2 <= len(group) <= 8  # num_aug=100 asks for more than the 8 transforms can give
        augs = [parse_aug_name(n) for n in group[1:]]
        assert all(np.array_equal(perm, np.arange(10)) for _, _, perm in augs)
        assert len({tid for _, tid, _ in augs}) == len(augs) and 0 not in {tid for _, tid, _ in augs}


def test_bad_flags_raise_value_errors_naming_the_value(tmp_path):
    with pytest.raises(ValueError, match="num_aug must be an int >= 0, got -1"):
        build_dataset(ARC_PREFIX, tmp_path, ["manual_evaluation"], num_aug=-1)
    with pytest.raises(ValueError, match="rng_scheme must be one of"):
        build_dataset(ARC_PREFIX, tmp_path, ["manual_evaluation"], rng_scheme="global")
    with pytest.raises(ValueError, match=r"train_only_subsets \['x'\] are not among subsets"):
        build_dataset(ARC_PREFIX, tmp_path, ["manual_evaluation"], train_only_subsets=["x"])


def test_a_test_set_outside_the_subsets_is_a_warning_and_leaves_no_test_split(tmp_path):
    # upstream accepts it (its test set is simply absent): every test pair goes to train/, no test/ is written
    s = build_small(tmp_path / "o", test_set_names=["evaluation2"], num_aug=1)
    assert any("['evaluation2'] are not among subsets" in w for w in s["warnings"])
    assert "test" not in s and not (tmp_path / "o" / "test").exists()
    assert json.loads((tmp_path / "o" / "test_puzzles.json").read_text()) == {}


def test_help_opens_with_a_working_example(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = capsys.readouterr().out
    assert "example:\n  trm build-data --input-file-prefix" in help_text
    for flag in ("--test-set-names", "--test-set-name2", "--train-only-subsets", "--no-enable-train-translation",
                 "--puzzle-identifiers-start", "--canvas-size", "--skip-invalid", "--challenges", "--rng-scheme",
                 "--split-order", "--unsolved-test-pairs"):
        assert flag in help_text


def test_per_task_scheme_keeps_a_tasks_augmentations_independent_of_the_mix(tmp_path):
    (tmp_path / "two").mkdir()
    (tmp_path / "four").mkdir()
    write_subset(tmp_path / "two" / "x", "a", "evaluation2", 2)
    write_subset(tmp_path / "four" / "x", "a", "evaluation2", 4)  # the same 2 tasks first, then 2 more
    names = {}
    for mix in ("two", "four"):
        for scheme in ("per-task", "upstream"):
            build_dataset(str(tmp_path / mix / "x"), tmp_path / mix / scheme, ["a"], num_aug=5, progress=False,
                          rng_scheme=scheme)
            names[mix, scheme] = set(json.loads((tmp_path / mix / scheme / "identifiers.json").read_text()))
    assert names["two", "per-task"] <= names["four", "per-task"]  # the first two tasks kept their versions
    assert not names["two", "upstream"] <= names["four", "upstream"]  # one global stream: the mix changes them


def test_upstream_dedup_compares_the_multiset_of_pairs_not_their_order():
    from trm_core.data.build import plan_augmentations, plan_augmentations_upstream
    from trm_core.data.legacy_rng import LegacyStream

    a = np.array([[1, 2, 0], [3, 0, 0]], dtype=np.uint8)
    b = np.array([[4, 0], [0, 5]], dtype=np.uint8)
    # The second pair is the first mirrored left-right: mirroring the task swaps its two pairs.
    pairs = [(a, b), (a[:, ::-1].copy(), b[:, ::-1].copy())]
    upstream, _ = plan_augmentations_upstream(pairs, 10, LegacyStream(0), colour_permutation=False)
    ordered, _ = plan_augmentations([g for p in pairs for g in p], 10, np.random.default_rng(0),
                                    colour_permutation=False)
    assert 4 not in upstream.tolist()  # t4 (fliplr) gives the same task: upstream's puzzle_hash rejects it
    assert 4 in ordered.tolist()  # the per-task scheme compares pairs in order


def test_a_task_repeated_across_subsets_shares_its_identifiers_by_name(tmp_path):
    write_subset(tmp_path / "x", "a", "evaluation2", 3)
    write_subset(tmp_path / "x", "b", "evaluation2", 2)  # tasks of `a` again
    s = build_dataset(str(tmp_path / "x"), tmp_path / "o", ["a", "b"], test_set_names=["b"], num_aug=4,
                      progress=False)
    names = json.loads((tmp_path / "o" / "identifiers.json").read_text())
    assert len(names) == len(set(names)) and s["num_puzzle_identifiers"] == len(names)  # one id per name
    train = load_split(tmp_path / "o", "train")
    assert len(train["puzzle_identifiers"]) > len(set(train["puzzle_identifiers"].tolist()))  # originals shared
    originals = train["puzzle_identifiers"][train["group_indices"][:-1]]
    assert len(set(originals.tolist())) == 3  # 5 groups, 3 distinct tasks


def test_split_order_test_first_numbers_the_test_puzzles_first(tmp_path):
    from trm_core.data.build import python_set_split_order

    assert sorted(python_set_split_order()) == ["test", "train"]
    write_subset(tmp_path / "x", "ev", "evaluation2", 2)
    write_subset(tmp_path / "x", "tr", "training2", 2)
    args = (str(tmp_path / "x"), tmp_path / "o", ["ev", "tr"])
    s = build_dataset(*args, test_set_names=["ev"], num_aug=2, progress=False, split_order=("test", "train"))
    assert s["split_order"] == ["test", "train"]
    assert load_split(tmp_path / "o", "test")["puzzle_identifiers"].tolist() == list(range(1, 7))
    with pytest.raises(ValueError, match="split_order must order"):
        build_dataset(*args, split_order=("train",))


def test_split_order_auto_follows_pythons_hash_order_only_when_pythonhashseed_is_set(tmp_path):
    import os
    import subprocess
    import sys

    write_subset(tmp_path / "x", "ev", "evaluation2", 1)
    write_subset(tmp_path / "x", "tr", "training2", 1)
    cmd = [sys.executable, "-m", "trm_core.data.build", "--input-file-prefix", str(tmp_path / "x"), "--subsets",
           "ev", "tr", "--test-set-name", "ev", "--num-aug", "1", "--no-progress", "--output-dir"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}
    # upstream's order: iterating its set of the two destinations, in a bare Python process with that seed
    upstream_order = "print(','.join(s for s, _ in set(dict(train=('train', 'all'), test=('test', 'all')).values())))"
    for seed in ("0", "2"):  # on CPython 3.11: test first, then train first
        python_order = subprocess.run([sys.executable, "-c", upstream_order], env=env | {"PYTHONHASHSEED": seed},
                                      capture_output=True, text=True, check=True).stdout.strip().split(",")
        out = subprocess.run(cmd + [str(tmp_path / f"o{seed}")], env=env | {"PYTHONHASHSEED": seed},
                             capture_output=True, text=True, check=True)
        assert json.loads(out.stdout.splitlines()[-1])["split_order"] == python_order
    out = subprocess.run(cmd + [str(tmp_path / "random")], env=env, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.splitlines()[-1])["split_order"] == ["train", "test"]
    assert "--split-order test-first" in out.stderr  # and says how to match an upstream build that differs
