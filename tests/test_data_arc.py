"""Task loading and validation (trm_core.data.arc) on the shipped ARC files and on small malformed fixtures."""

import gzip
import shutil

import numpy as np
import pytest
from _data_helpers import ARC_DIR, ARC_PREFIX, BAD_DIR

from trm_core.data.arc import TaskError, find_task_files, load_challenges_json, load_tasks

# (subset, tasks, test inputs) from data/arc/README.md
SHIPPED = [("training", 400, 416), ("evaluation", 400, 419), ("training2", 1000, 1076), ("evaluation2", 120, 172),
           ("concept", 160, 480), ("manual_evaluation", 23, 38), ("test", 240, 259)]


@pytest.mark.parametrize("subset,n_tasks,n_test", SHIPPED)
def test_every_shipped_set_loads_and_validates(subset, n_tasks, n_test):
    challenges, solutions = find_task_files(ARC_PREFIX, subset)
    tasks, problems = load_tasks(challenges, solutions)
    assert problems == [] and len(tasks) == n_tasks
    assert sum(len(t.test_inputs) for t in tasks.values()) == n_test
    task = next(iter(tasks.values()))
    assert all(g.dtype == np.uint8 and g.ndim == 2 for pair in task.train for g in pair)
    if subset == "test":
        assert solutions is None and task.test_outputs is None
    else:
        assert len(task.test_outputs) == len(task.test_inputs)


def test_tasks_keep_file_order():
    raw = load_challenges_json(ARC_DIR / "arc-agi_evaluation2_challenges.json.gz")
    tasks, _ = load_tasks(ARC_DIR / "arc-agi_evaluation2_challenges.json.gz")
    assert list(tasks) == list(raw)


def test_find_task_files_accepts_plain_json_and_names_what_it_looked_for(tmp_path):
    with gzip.open(ARC_DIR / "arc-agi_manual_evaluation_challenges.json.gz") as src:
        (tmp_path / "x_manual_challenges.json").write_bytes(src.read())
    challenges, solutions = find_task_files(str(tmp_path / "x"), "manual")
    assert challenges.name == "x_manual_challenges.json" and solutions is None
    assert len(load_tasks(challenges)[0]) == 23
    with pytest.raises(TaskError, match=r"x_nope_challenges\.json and .*x_nope_challenges\.json\.gz"):
        find_task_files(str(tmp_path / "x"), "nope")


BAD = [
    ("ragged_rows", "ragged_rows_challenges.json: task 00576224: train[1].output: row 3 has 4 cells, row 0 has 5 "
                    "(grids must be rectangular)"),
    ("too_large", "too_large_challenges.json: task 0000big1: test[0].input: grid is 1x31; each side must be 1..30"),
    ("empty_grid", "empty_grid_challenges.json: task 0000emp1: train[0].input: must be a non-empty list of rows"),
    ("bad_colour", "bad_colour_challenges.json: task 0000col1: train[0].input: cell [0][1] is 10; cells must be "
                   "ints 0..9"),
    ("not_an_int", "not_an_int_challenges.json: task 0000int1: train[0].input: cell [0][1] is 2.5"),
    ("empty_train", "empty_train_challenges.json: task 0000trn1: train: must be a non-empty list of pairs"),
    ("missing_output", "missing_output_challenges.json: task 0000out1: train[0].output: missing"),
    ("missing_test_input", "missing_test_input_challenges.json: task 0000tst1: test[0].input: missing"),
]


@pytest.mark.parametrize("name,message", BAD)
def test_each_kind_of_malformed_task_names_file_task_pair_and_field(name, message):
    with pytest.raises(TaskError) as e:
        load_tasks(BAD_DIR / f"{name}_challenges.json")
    assert str(e.value).startswith(message)


@pytest.mark.parametrize("name,message", [
    ("wrong_count", "two_good_wrong_count_solutions.json: task 00000002: test[1].solution: the solutions file has "
                    "2 grids for 1 test inputs"),
    ("missing_task", "two_good_missing_task_solutions.json: task 00000002: test[0].solution: missing"),
    ("bad_grid", "two_good_bad_grid_solutions.json: task 00000002: test[0].solution: row 1 has 1 cells, row 0 has 2"),
])
def test_solutions_must_match_the_test_inputs(name, message):
    with pytest.raises(TaskError) as e:
        load_tasks(BAD_DIR / "two_good_challenges.json", BAD_DIR / f"two_good_{name}_solutions.json")
    assert str(e.value).startswith(message)


@pytest.mark.parametrize("name,message", BAD)
def test_skip_invalid_reports_the_bad_task_and_keeps_the_good_one(name, message):
    tasks, problems = load_tasks(BAD_DIR / f"{name}_challenges.json", skip_invalid=True)
    assert list(tasks) == ["00000001"]
    assert len(problems) == 1 and problems[0].startswith(message)


@pytest.mark.parametrize("name,message", [
    ("not_json", "not_json_challenges.json: not readable as JSON"),
    ("top_level_list", "top_level_list_challenges.json: top level must be a JSON object"),
])
def test_unreadable_files_fail_naming_the_file_even_when_skipping(name, message):
    with pytest.raises(TaskError, match=message):
        load_tasks(BAD_DIR / f"{name}_challenges.json", skip_invalid=True)


def test_missing_file_is_a_task_error(tmp_path):
    with pytest.raises(TaskError, match="file not found"):
        load_challenges_json(tmp_path / "absent.json")


def test_gzip_and_plain_give_the_same_tasks(tmp_path):
    plain = tmp_path / "e_challenges.json"
    with gzip.open(ARC_DIR / "arc-agi_evaluation2_challenges.json.gz") as src, open(plain, "wb") as dst:
        shutil.copyfileobj(src, dst)
    a, _ = load_tasks(plain)
    b, _ = load_tasks(ARC_DIR / "arc-agi_evaluation2_challenges.json.gz")
    t = "0934a4d8" if "0934a4d8" in a else next(iter(a))
    assert all((x == y).all() for x, y in zip(a[t].test_inputs, b[t].test_inputs))
