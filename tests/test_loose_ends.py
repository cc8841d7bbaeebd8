"""The loose ends of issue 15, one test each: a re-runnable COMMANDS.txt, metrics.jsonl without repeated steps after
a resume, task ids holding the augmentation separator, duplicated task ids, and `"test": []` judged the same way
by the Kaggle runner and `trm validate`. (`package_kaggle.sh --out` is in test_security.py.)"""

from __future__ import annotations

import json
import os
import shlex
import shutil

import pytest

from trm_core.cli import main as trm
from trm_core.data.arc import TaskError, load_challenges_json, load_tasks
from trm_core.train import latest_checkpoint

TINY = dict(hidden_size=32, num_heads=2, L_layers=1, H_cycles=1, L_cycles=1, puzzle_emb_ndim=32, puzzle_emb_len=1,
            halt_max_steps=2, halt_exploration_prob=0.0, forward_dtype="float32")


def train_argv(data, out, **kw) -> list[str]:
    settings = dict(global_batch_size=8, epochs=4, eval_interval="null", evaluate="false", progress="false",
                    lr_warmup_steps=1, checkpoint_every_eval="false", **kw)
    return (["--config-name", "cfg_tiny", *(f"arch.{k}={v}" for k, v in TINY.items()),
             f"data_paths=[{data}]", f"output_dir={out}", "+run_name=t"]
            + [f"{k}={v}" for k, v in settings.items()])


def test_commands_txt_holds_a_command_that_runs_the_training_again(small_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = train_argv(small_dataset, "runs dir", max_steps=1)  # a space: it must come back quoted
    assert trm(["train", *argv]) == 0
    line = (tmp_path / "runs dir" / "t" / "COMMANDS.txt").read_text().splitlines()[-1]
    words = shlex.split(line)
    assert words[:3] == ["cd", str(tmp_path), "&&"] and words[3:5] == ["trm", "train"]  # the subcommand is kept
    assert words[5:] == argv  # every argument, exactly
    shutil.rmtree(tmp_path / "runs dir")
    monkeypatch.chdir(words[1])
    assert trm(words[4:]) == 0  # what the line runs (`trm train ...`), in its folder
    assert latest_checkpoint(tmp_path / "runs dir" / "t").name == "step_1"


def test_after_a_kill_and_resume_metrics_jsonl_holds_each_step_once(small_dataset, tmp_path, capsys):
    run = tmp_path / "t"
    assert trm(["train", *train_argv(small_dataset, tmp_path, max_steps=6, checkpoint_every_n_steps=3,
                                     keep_last_checkpoints=5)]) == 0
    # As if the run had been killed after logging step 6 but before its checkpoint: steps 4-6 were logged, the
    # newest checkpoint is step 3, and the kill tore the last line.
    shutil.rmtree(run / "checkpoints" / "step_6")
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 7, "train/lm_lo')
    assert trm(["train", *train_argv(small_dataset, tmp_path, max_steps=6, checkpoint_every_n_steps=3,
                                     resume=str(run))]) == 0
    assert "dropped 4 metrics.jsonl line(s) past step 3" in capsys.readouterr().err
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_a_task_id_holding_the_augmentation_separator_is_refused_at_load(tmp_path):
    from trm_core.data.augment import aug_name, parse_aug_names

    good = {"train": [{"input": [[1]], "output": [[2]]}], "test": [{"input": [[3]]}]}
    tid = "abc|||t1|||0123456789"
    # Why: the un-augmented puzzle is named by its bare id, which then parses as an augmentation of "abc"
    # (its vote would go to another task, or nowhere); the augmented names parse fine (rsplit).
    assert parse_aug_names([tid])[0] == ["abc"]
    assert parse_aug_names([aug_name(tid, 3, list(range(10)))])[0] == [tid]
    path = tmp_path / "c.json"
    path.write_text(json.dumps({tid: good, "ok": good}))
    with pytest.raises(TaskError, match=r"c\.json: task abc\|\|\|t1\|\|\|0123456789: task ids must not contain"):
        load_tasks(path)
    tasks, problems = load_tasks(path, skip_invalid=True)  # the Kaggle runner: a fallback for that task only
    assert list(tasks) == ["ok"] and "'|||'" in problems[0]


def test_a_task_id_that_appears_twice_in_a_file_is_an_error_naming_it(tmp_path, capsys):
    task = '{"train": [{"input": [[1]], "output": [[2]]}], "test": [{"input": [[3]]}]}'
    path = tmp_path / "c.json"
    path.write_text(f'{{"00576224": {task}, "0a1b2c3d": {task}, "00576224": {task}}}')
    with pytest.raises(TaskError, match=r"c\.json: task id 00576224 appears twice"):
        load_challenges_json(path)
    solutions = tmp_path / "s.json"
    solutions.write_text('{"00576224": [[[2]]], "00576224": [[[2]]]}')
    assert trm(["score", str(path), str(solutions)]) == 2
    assert "s.json: task id 00576224 appears twice" in capsys.readouterr().err


def test_test_lists_that_are_empty_are_judged_alike_by_the_runner_and_validate(tmp_path, capsys):
    from trm_core.submission import check_submission, write_fallback_submission

    chal = tmp_path / "c.json"
    chal.write_text(json.dumps({"none": {"train": [], "test": []}, "one": {"train": [], "test": [{"input": [[1]]}]}}))
    sub = write_fallback_submission(chal, tmp_path / "submission.json")
    assert sub["none"] == [] and len(sub["one"]) == 1
    assert check_submission(tmp_path / "submission.json", chal) == []
    assert trm(["validate", str(tmp_path / "submission.json"), str(chal)]) == 0
    assert capsys.readouterr().out.strip() == "valid"
    (tmp_path / "other.json").write_text(json.dumps({**sub, "none": [{"attempt_1": [[0]], "attempt_2": [[0]]}]}))
    assert trm(["validate", str(tmp_path / "other.json"), str(chal)]) == 1
    assert "task none: 1 entries for 0 test inputs" in capsys.readouterr().out


def test_dispatcher_shows_the_traceback_only_when_asked(tmp_path, capsys, monkeypatch):
    (tmp_path / "s.json").write_text("[[[")
    assert trm(["score", str(tmp_path / "s.json"), str(tmp_path / "s.json")]) == 2
    assert "Traceback" not in capsys.readouterr().err
    monkeypatch.setenv("TRM_TRACEBACK", "1")
    with pytest.raises(ValueError):
        trm(["score", str(tmp_path / "s.json"), str(tmp_path / "s.json")])
    assert os.environ["TRM_TRACEBACK"] == "1"


# --- issue 14's loose ends ---------------------------------------------------------------------------------

def test_the_cli_starts_without_torch_and_python_m_trm_core_is_trm():
    import subprocess
    import sys

    from conftest import REPO

    probe = "import sys, trm_core, trm_core.cli, trm_core.kaggle; print('torch' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert res.stdout.strip() == "False", res.stderr  # `trm --help` and `trm kaggle --help` load no torch
    res = subprocess.run([sys.executable, "-m", "trm_core", "--help"], capture_output=True, text=True, cwd=REPO,
                         timeout=120)
    assert res.returncode == 0 and "usage: trm <command>" in res.stdout
    import trm_core

    assert trm_core.load_checkpoint.__module__ == "trm_core.checkpoint"  # the lazy names still resolve


def test_the_readme_facts_keep_the_recorded_suite_time_whole_with_its_date():
    import readme_facts

    suite = "; the whole run took 4.9 minutes on 2 CPU cores (825 passed, 5 skipped in 291.10s (0:04:51), 2026-11-29)"
    facts = readme_facts.render(833, 0.04, suite)
    assert readme_facts.recorded_suite(facts) == suite
    assert readme_facts.recorded_suite(readme_facts.render(833, 0.04, "")) == ""


def test_the_readme_facts_are_the_measured_ones():
    import readme_facts  # scripts/, on sys.path via conftest

    assert readme_facts.main(["--check"]) == 0, "run scripts/readme_facts.py"
