"""The learning proof: its task list follows its written rule, the baselines score what they should, and the
whole pipeline (build -> train -> evaluate -> score) runs on two real tasks in seconds."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from conftest import ARC_DIR, REPO
from trm_core import proof
from trm_core.config import KaggleRunConfig
from trm_core.data.arc import load_task_file
from trm_core.config import load_preset

TASKS = REPO / "data" / "proof_tasks.json"


def _task(train, test_in, test_out=None):
    test = [{"input": test_in} if test_out is None else {"input": test_in, "output": test_out}]
    return {"train": [{"input": a, "output": b} for a, b in train], "test": test}


def test_the_shipped_task_list_is_what_its_rule_selects():
    from trm_core.data.arc import load_tasks

    listed = json.loads(TASKS.read_text())
    tasks, _ = load_tasks(ARC_DIR / "arc-agi_training2_challenges.json.gz",
                          ARC_DIR / "arc-agi_training2_solutions.json.gz")
    selected = []
    for t in tasks.values():  # the rule in proof_tasks.json, in file order
        grids = [g for pair in t.train for g in pair] + t.test_inputs + t.test_outputs
        if max(max(g.shape) for g in grids) <= 10 and len(t.train) <= 4 and len(t.test_inputs) == 1:
            selected.append(t.task_id)
    assert listed["task_ids"] == selected[:10]
    challenges, solutions, info = load_task_file(TASKS)
    assert list(challenges) == listed["task_ids"] and set(solutions) == set(challenges)
    assert "rule" in info and proof.max_grid_side(challenges) <= 10


def test_identity_baseline_solves_exactly_the_identity_task():
    challenges = {"same": _task([([[1, 2]], [[1, 2]])], [[3, 4]]),
                  "flip": _task([([[1, 2]], [[2, 1]])], [[3, 4]])}
    solutions = {"same": [[[3, 4]]], "flip": [[[4, 3]]]}
    scores = proof.score(proof.baseline_identity(challenges), solutions)
    assert (scores["pass@2"], scores["tasks solved"], scores["solved"]) == (0.5, 1, ["same"])


def test_most_common_output_baseline_takes_the_majority_then_the_first_seen():
    challenges = {"const": _task([([[1]], [[5]]), ([[2]], [[7]]), ([[3]], [[7]])], [[4]]),
                  "tie": _task([([[1]], [[8]]), ([[2]], [[9]])], [[3]])}
    sub = proof.baseline_most_common_output(challenges)
    assert sub["const"][0] == {"attempt_1": [[7]], "attempt_2": [[7]]}
    assert sub["tie"][0]["attempt_1"] == [[8]]
    assert proof.score(sub, {"const": [[[7]]], "tie": [[[9]]]})["solved"] == ["const"]


def test_cell_accuracy_is_the_better_attempts_share_of_right_cells_and_zero_for_a_wrong_shape():
    from trm_core.submission import cell_accuracy

    solutions = {"a": [[[1, 2], [3, 4]], [[5]]], "b": [[[1, 1, 1]]]}
    sub = {"a": [{"attempt_1": [[1, 2], [3, 0]], "attempt_2": [[0, 0], [0, 4]]},  # 3/4 beats 1/4
                 {"attempt_1": [[5, 5]], "attempt_2": [[5]]}],  # wrong shape first, exact second
           "b": [{"attempt_1": [[1], [1], [1]], "attempt_2": [[1, 1], [1]]}]}  # transposed, ragged: 0
    mean, per_task = cell_accuracy(sub, solutions)
    assert per_task == {"a": [0.75, 1.0], "b": [0.0]}
    assert mean == pytest.approx(1.75 / 3)
    assert cell_accuracy({}, solutions)[1] == {"a": [0.0, 0.0], "b": [0.0]}  # missing tasks count 0


def test_inline_test_outputs_are_used_when_there_is_no_solutions_file(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"a": _task([([[1]], [[1]])], [[2]], [[2]])}))
    _, solutions, _ = load_task_file(path)
    assert solutions == {"a": [[[2]]]}


def test_the_proof_runs_end_to_end_on_two_real_tasks_and_prints_its_score(tmp_path, capsys):
    challenges, solutions, _ = load_task_file(TASKS)
    two = list(challenges)[:2]
    path = tmp_path / "two.json"
    path.write_text(json.dumps({t: {"train": challenges[t]["train"],
                                    "test": [{"input": p["input"], "output": o}
                                             for p, o in zip(challenges[t]["test"], solutions[t])]} for t in two}))
    code = proof.main(["--tasks", str(path), "--output-dir", str(tmp_path / "out"), "--budget-minutes", "2",
                       "--weights", "scratch", "--no-progress", "--set", "train_aug=3", "--set", "vote_aug=3",
                       "--set", "steps=3", "--set", "arch.hidden_size=16", "--set", "arch.num_heads=2",
                       "--set", "arch.puzzle_emb_ndim=16", "--set", "eval_batch_size=8"])
    out = capsys.readouterr().out
    assert code == 0
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    (col,) = result["columns"]
    assert col["steps"] == 3 and col["test_rows"] == 2 * 4
    assert [r["method"] for r in result["rows"]] == ["from scratch (full, 2 min)", "test input unchanged",
                                                     "most common training output"]
    assert "pass@2" in out and "test input unchanged" in out


ALTERED = {"train_aug": 7, "colour_permutation": False, "dihedral_first": True, "train_translation": True,
           "batch_size": 3, "vote_aug": 2, "eval_batch_size": 3, "seed": 9, "steps": 4, "safety_margin": 0.3,
           "warmup_steps": 5, "hidden_rerun_factor": 1.5, "nproc": 2, "device": "auto", "select": "poe",
           "select_candidates": 3, "select_views": 2, "noise_scale": 0.5, "noise_samples": 1, "pool_checkpoints": 2}


@pytest.mark.parametrize("key", sorted(f.name for f in dataclasses.fields(KaggleRunConfig)))
def test_every_recipe_setting_reaches_the_proof_columns(key, tmp_path):
    """A field added to KaggleRunConfig is a `--set` key of the proof at once (and a flag of trm kaggle, and a
    notebook parameter: test_notebooks). Fields the proof owns per column are set by it."""
    per_column = {"challenges_file", "solutions_file", "weights", "output_dir", "work_dir", "budget_minutes",
                  "progress", "heartbeat_minutes", "mode", "canvas_size"}
    files = (tmp_path / "c.json", tmp_path / "s.json")

    def config(items):
        run, _ = proof.apply_settings(load_preset("proof"), proof.PROOF_SETTINGS, items)
        return proof.column_config(run, "scratch", "scratch", files, tmp_path, 12, 10.0, False)

    if key in per_column:
        assert getattr(config([f"{key}=x"] if key != "budget_minutes" else [f"{key}=3"]), key) == \
            getattr(config([]), key)
        return
    value = ALTERED.get(key, {"train": ["lr=1e-3"], "data_dir": "/d", "commit_budget_minutes": 3.0}.get(key))
    assert value is not None, f"give {key} an altered value in ALTERED"
    assert getattr(config([f"{key}={json.dumps(value)}"]), key) == value != getattr(config([]), key)


def test_the_proof_keeps_the_optimizer_its_learning_rate_was_tuned_with(tmp_path):
    run, _ = proof.apply_settings(load_preset("proof"), proof.PROOF_SETTINGS, ["optimizer=adam_atan2_pytorch"])
    assert "optimizer=adam_atan2" in load_preset("proof")["train"]
    from trm_core.adapt import adapt_config

    assert adapt_config("full", run["train"], {}, scratch=True).optimizer == "adam_atan2_pytorch"  # the last wins


def test_a_training_key_goes_to_the_training_overrides_and_is_checked(tmp_path):
    run, own = proof.apply_settings(load_preset("proof"), proof.PROOF_SETTINGS,
                                    ["lr=1e-3", "adapt.lr=1e-4", "canvas=14", "arch.hidden_size=16"])
    assert run["train"][-2:] == ["lr=1e-3", "arch.hidden_size=16"] and own["adapt"] == ["lr=1e-4"]
    assert own["canvas"] == 14
    files = (tmp_path / "c.json", tmp_path / "s.json")
    trunk = proof.column_config(run, "trunk_adapted", "w", files, tmp_path, 12, 10.0, False)
    assert not any(t.startswith("arch.") for t in trunk.train) and trunk.canvas_size is None
    challenges, solutions, _ = load_task_file(TASKS)
    with pytest.raises(ValueError, match="'lrr'"):
        proof.run_proof(challenges, solutions, tmp_path / "bad", settings=["lrr=1"], progress=False)


def test_an_ensemble_trains_one_model_per_member_and_scores_their_pooled_votes(tmp_path, capsys):
    challenges, solutions, _ = load_task_file(TASKS)
    two = {t: challenges[t] for t in list(challenges)[:2]}
    tiny = {"arch.hidden_size": 16, "arch.num_heads": 2, "arch.puzzle_emb_ndim": 16}
    result = proof.run_proof(two, {t: solutions[t] for t in two}, tmp_path, budget_minutes=2, progress=False,
                             settings={"train_aug": 3, "vote_aug": 3, "steps": 2, "eval_batch_size": 8, **tiny,
                                       "ensemble": [{"colour_permutation": False}, {"seed": 1}]})
    (col,) = result["columns"]
    assert [m["overrides"] for m in col["members"]] == [{"colour_permutation": False}, {"seed": 1}]
    assert all(m["steps"] == 2 for m in col["members"]) and col["steps"] == 4
    for k in (0, 1):
        assert (tmp_path / "scratch" / f"member_{k}" / "eval" / "predictions.json").is_file()
    assert col["submission"] == str(tmp_path / "scratch" / "submission.json")
    assert set(json.loads((tmp_path / "scratch" / "submission.json").read_text())) == set(two)
    with pytest.raises(ValueError, match="ensemble member 0"):
        proof.run_proof(two, solutions, tmp_path / "bad", settings={"ensemble": [{"canvas": 20}]})


def test_with_a_trunk_the_proof_scores_it_unadapted_adapted_and_against_scratch(tmp_path):
    challenges, solutions, _ = load_task_file(REPO / "data" / "heldout" / "arc1_eval_v1.json")
    two = {t: challenges[t] for t in list(challenges)[:2]}
    tiny = {"arch.hidden_size": 16, "arch.num_heads": 2, "arch.puzzle_emb_ndim": 16}
    result = proof.run_proof(two, {t: solutions[t] for t in two}, tmp_path, budget_minutes=2, progress=False,
                             weights=proof.SHIPPED_TRUNK,
                             settings={"train_aug": 2, "vote_aug": 2, "steps": 2, "eval_batch_size": 8, **tiny,
                                       "adapt.lr": 1e-4})
    none, adapted, scratch = result["columns"]
    # the preset adapts a trunk embeddings-first; from scratch every weight trains from the start
    assert [c["mode"] for c in result["columns"]] == ["none", "emb_then_full", "full"]
    assert none["steps"] == 0 and adapted["steps"] == 2 and scratch["steps"] == 2
    assert "lr=0.0001" in adapted["settings"]["train"] and "lr=0.0001" not in scratch["settings"]["train"]
    # the trunk carries its own architecture; `arch` shapes the scratch model only
    from trm_core.checkpoint import read_checkpoint

    def hidden(column):
        (path,) = (Path(column["run_dir"]) / "runs" / "adapt" / "checkpoints").glob("step_*/model.pt")
        return read_checkpoint(path).arch["hidden_size"]

    assert hidden(adapted) == 64 and hidden(scratch) == 16
    assert [r["method"] for r in result["rows"]][3:] == ["test input unchanged", "most common training output"]
    assert all(0.0 <= r["pass@2"] <= r["cell accuracy"] <= 1.0 for r in result["rows"])
    assert "| cell accuracy |" in proof.format_result(result)


def _bench_heldout():
    import importlib
    import sys

    sys.path.insert(0, str(REPO / "bench"))
    try:
        return importlib.import_module("bench_heldout")
    finally:
        sys.path.remove(str(REPO / "bench"))


def test_the_sign_test_is_the_chance_of_that_many_wins_from_fair_coins():
    bench = _bench_heldout()
    assert bench.sign_test(5, 0) == pytest.approx(1 / 32)
    assert bench.sign_test(1, 1) == pytest.approx(3 / 4)
    assert bench.sign_test(0, 0) == 1.0


def test_paired_comparison_counts_tasks_where_a_column_is_closer_to_the_truth(tmp_path):
    bench = _bench_heldout()
    solutions = {"x": [[[1, 2], [3, 4]]], "y": [[[5]]], "z": [[[6, 6]]]}
    attempts = {"a": {"x": [[1, 2], [3, 0]], "y": [[5]], "z": [[6, 0]]},  # 0.75, 1, 0.5
                "b": {"x": [[0, 0], [3, 0]], "y": [[5]], "z": [[6, 6]]}}  # 0.25, 1, 1
    pairs = []
    for run in ("r1", "r2"):
        (tmp_path / run).mkdir()
        (tmp_path / run / "solutions.json").write_text(json.dumps(solutions))
        for col, grids in attempts.items():
            (tmp_path / run / col).mkdir()
            sub = {t: [{"attempt_1": g, "attempt_2": g}] for t, g in grids.items()}
            (tmp_path / run / col / "submission.json").write_text(json.dumps(sub))
        pairs.append([str(tmp_path / run / "a"), str(tmp_path / run / "b")])
    out = tmp_path / "paired.json"
    assert bench.paired(pairs, str(out), []) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert (row["a_closer"], row["b_closer"], row["equal"]) == (1, 1, 1)
    assert (row["a_solved"], row["b_solved"]) == (2, 4) and row["sign_test_p"] == pytest.approx(3 / 4)
