"""Task selection by rule: the pretraining pool never holds a held-out task; held-out lists are drawn by rule."""

from __future__ import annotations

import json

import pytest
from conftest import REPO

from trm_core.data.arc import find_task_files, load_task_file, load_tasks
from trm_core.data.select import main as select_main
from trm_core.data.select import max_side, select_tasks

PREFIX = str(REPO / "data" / "arc" / "arc-agi")


def subset(name):
    return load_tasks(*find_task_files(PREFIX, name))[0]


@pytest.fixture(scope="module")
def pool():
    evaluation, evaluation2 = subset("evaluation"), subset("evaluation2")
    kept, report = select_tasks([("training", subset("training")), ("training2", subset("training2")),
                                 ("concept", subset("concept"))], [evaluation, evaluation2], max_grid_side=12)
    return kept, report, evaluation, evaluation2


def test_pool_holds_no_id_of_arc1_evaluation_or_evaluation2(pool):
    kept, _, evaluation, evaluation2 = pool
    assert kept and not set(kept) & (set(evaluation) | set(evaluation2))


def test_training2_copies_of_arc1_evaluation_tasks_are_dropped_by_id(pool):
    _, report, evaluation, _ = pool
    by_id = [t for t, why in report["dropped"]["training2"].items() if why == "id of an excluded task"]
    assert len(by_id) == 376 and set(by_id) <= set(evaluation)


def test_a_task_sharing_a_grid_pair_with_a_held_out_task_is_dropped(pool):
    # ARC-AGI-1 training 40853293 has another id but an evaluation task's demonstrations
    _, report, _, _ = pool
    assert report["dropped"]["training"]["40853293"] == "shares a grid pair with an excluded task"


def test_every_pool_task_fits_the_canvas_and_appears_once(pool):
    kept, report, _, _ = pool
    assert all(max_side(t) <= 12 for t in kept.values())
    assert report["kept"] == len(kept) == len(set(kept))


def test_a_draw_depends_on_the_seed_only_and_comes_from_the_eligible_tasks():
    evaluation = subset("evaluation")
    args = dict(max_grid_side=10, test_inputs=1, sample=10)
    a, rep = select_tasks([("evaluation", evaluation)], **args, seed="s1")
    again, _ = select_tasks([("evaluation", evaluation)], **args, seed="s1")
    other, _ = select_tasks([("evaluation", evaluation)], **args, seed="s2")
    eligible, _ = select_tasks([("evaluation", evaluation)], max_grid_side=10, test_inputs=1)
    assert list(a) == list(again) and set(a) != set(other)
    assert len(a) == 10 and set(a) <= set(eligible) and rep["eligible"] == len(eligible) == 66
    assert all(len(t.test_inputs) == 1 and max_side(t) <= 10 for t in a.values())


def test_the_shipped_held_out_list_is_what_its_recorded_command_draws(tmp_path, monkeypatch):
    shipped = json.loads((REPO / "data" / "heldout" / "arc1_eval_v1.json").read_text())
    argv = shipped["command"].split()[2:]
    out = tmp_path / "list.json"
    argv[argv.index("--task-list") + 1] = str(out)
    monkeypatch.chdir(REPO)
    assert select_main(argv) == 0
    assert json.loads(out.read_text())["task_ids"] == shipped["task_ids"]
    challenges, solutions, info = load_task_file(REPO / "data" / "heldout" / "arc1_eval_v1.json")
    assert list(challenges) == shipped["task_ids"] and set(solutions) == set(challenges)


def test_select_tasks_writes_a_challenges_and_solutions_pair_the_loader_reads(tmp_path):
    assert select_main(["--input-file-prefix", PREFIX, "--subsets", "manual_evaluation", "--max-side", "12",
                        "--output", str(tmp_path / "sel")]) == 0
    tasks, problems = load_tasks(tmp_path / "sel_challenges.json", tmp_path / "sel_solutions.json")
    report = json.loads((tmp_path / "sel_selection.json").read_text())
    assert not problems and sorted(tasks) == report["task_ids"]


def test_a_missing_subset_is_one_line_and_exit_2(tmp_path, capsys):
    assert select_main(["--input-file-prefix", PREFIX, "--subsets", "nosuch", "--output", str(tmp_path / "x")]) == 2
    assert "nosuch" in capsys.readouterr().err
