"""The Kaggle runner: deadline planner, fallback submissions, torchrun commands, the CPU pipeline, a SIGKILL."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, write_small_task_files
from trm_core.evaluate import validate_submission
from trm_core.kaggle import (STEP_HEADROOM, KaggleRunConfig, augmentations_that_fit, check_submission, eval_command,
                             fallback_challenges, main_plan, mode_train_config, plan_budget, run_kaggle,
                             train_command, write_fallback_submission)

# A TRM small enough that a training step and an inference batch take milliseconds on one CPU thread.
TINY_ARCH = {"hidden_size": 32, "num_heads": 2, "L_layers": 1, "H_cycles": 1, "L_cycles": 1,
             "puzzle_emb_ndim": 32, "puzzle_emb_len": 1, "halt_max_steps": 2, "forward_dtype": "float32"}
TINY_ARCH_FLAGS = [x for k, v in TINY_ARCH.items() for x in ("--arch", f"{k}={v}")]


def malformed_tasks() -> dict:
    """Three ways a hidden task can be broken; each must still get an entry per test input."""
    ok = [[1, 2], [3, 4]]
    return {
        "bad31col": {"train": [{"input": ok, "output": ok}], "test": [{"input": [[0] * 31]}, {"input": ok}]},
        "badcolor": {"train": [{"input": [[12]], "output": ok}], "test": [{"input": [[1, 12]]}]},
        "badtest": {"train": [{"input": ok, "output": ok}], "test": "oops"},
    }


def kaggle_tree(tmp_path: Path, n_tasks: int = 3) -> tuple[Path, Path]:
    """A competition folder with a few small shipped tasks plus malformed ones; returns (data dir, solutions)."""
    ch, so = write_small_task_files(tmp_path / "src", n_tasks=n_tasks, max_side=8)
    data = tmp_path / "input" / "arc-prize-2025"
    data.mkdir(parents=True)
    tasks = json.loads(ch.read_text()) | malformed_tasks()
    (data / "arc-agi_test_challenges.json").write_text(json.dumps(tasks))
    return data, so


# --- planner ---------------------------------------------------------------------------------------------

def test_plan_reserves_scaled_inference_margin_and_overhead_before_training():
    plan = plan_budget(1000, 100, 2.0, 0.01, 10_000, hidden_rerun_factor=1.5, safety_margin=0.1, overhead_s=50)
    assert plan.infer_s == pytest.approx(150)  # 10k rows x 10 ms x 1.5
    assert plan.margin_s == pytest.approx(100)
    assert plan.train_s == pytest.approx(1000 - 100 - 150 - 100 - 50)
    assert plan.train_steps == 300  # 600 s / 2 s
    assert plan.deadline_s == pytest.approx(100 + 50 + 600)
    assert plan.deadline_s + plan.infer_s + plan.margin_s == pytest.approx(1000)


def test_plan_gives_no_training_when_inference_alone_fills_the_budget():
    plan = plan_budget(600, 300, 1.0, 0.1, 5000)
    assert plan.train_steps == 0 and plan.train_s == 0


def test_plan_caps_steps_and_rejects_bad_inputs():
    assert plan_budget(10_000, 0, 1.0, 0.0, 0, max_steps=7).train_steps == 7
    with pytest.raises(ValueError, match="hidden_rerun_factor"):
        plan_budget(100, 0, 1.0, 0.0, 0, hidden_rerun_factor=0.5)
    with pytest.raises(ValueError, match="train_step_s"):
        plan_budget(100, 0, -1.0, 0.0, 0)


def test_voting_augmentations_shrink_to_the_time_left():
    # 10 test inputs, 0.1 s per row, factor 1: 100 s holds 1000 rows = 100 versions per input = 99 augmentations.
    assert augmentations_that_fit(100, 0.1, 10, 512, hidden_rerun_factor=1.0) == 99
    assert augmentations_that_fit(100, 0.1, 10, 8, hidden_rerun_factor=1.0) == 8
    assert augmentations_that_fit(0.5, 0.1, 10, 8, hidden_rerun_factor=1.0) == 0


def test_trm_plan_prints_steps_per_mode(capsys):
    assert main_plan(["--step-time", "0.5", "--measured-gpu", "H100", "--target-gpu", "L4", "--gpus", "4"]) == 0
    out = capsys.readouterr().out
    for mode in ("lora", "full", "emb_then_full", "emb_only", "none"):
        assert mode in out
    assert main_plan(["--step-time", "0.5", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert table["none"]["train_steps"] == 0
    assert table["emb_only"]["train_steps"] > table["full"]["train_steps"] > 0


# --- commands and configs ---------------------------------------------------------------------------------

def test_torchrun_commands_launch_one_process_per_gpu():
    cmd = train_command(4, "/w/adapt.yaml", python="py")
    assert cmd == ["py", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4", "-m",
                   "trm_core.train", "--config-name", "/w/adapt.yaml"]
    cmd = eval_command(4, "/w/model.pt", "/w/data", "/w/eval", challenges="/w/c.json", batch_size=256,
                       max_eval_augmentations=512, python="py")
    assert cmd[:7] == ["py", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4", "-m",
                       "trm_core.cli"]
    assert cmd[7:] == ["eval", "--checkpoint", "/w/model.pt", "--data", "/w/data", "--output-dir", "/w/eval",
                       "--challenges", "/w/c.json", "--batch-size", "256", "--max-eval-augmentations", "512",
                       "--no-progress"]
    with pytest.raises(ValueError):
        train_command(0, "x.yaml")


@pytest.mark.parametrize("mode", ["full", "emb_then_full", "emb_only", "lora", "none"])
def test_each_mode_maps_to_its_training_recipe(mode, tmp_path):
    cfg = mode_train_config(mode, data_path="d", output_dir="o", run_name="r", weights="w.pt", arch={},
                            batch_size=8, micro_batch_size=None, steps=0 if mode == "none" else 100, epochs=8,
                            max_train_seconds=60.0, lr=None, puzzle_emb_lr=3e-3, lr_warmup_steps=None,
                            lora_rank=2, ema=None, seed=1, device="cpu", eval_batch_size=4, progress=False)
    assert cfg.evaluate is False  # the runner infers once, on its own clock
    assert (cfg.freeze_weights_epochs == 2) == (mode == "emb_then_full")
    assert cfg.freeze_weights == (mode == "emb_only")
    assert (cfg.lora is not None) == (mode == "lora")
    if mode == "lora":
        assert cfg.lora["rank"] == 2
    assert cfg.puzzle_emb_lr == 3e-3 and cfg.max_train_seconds == 60.0 and cfg.eval_interval is None


def test_lr_min_ratio_reaches_the_training_config_and_defaults_to_the_recipes():
    kwargs = dict(data_path="d", output_dir="o", run_name="r", weights=None, arch={}, batch_size=8,
                  micro_batch_size=None, steps=100, epochs=8, max_train_seconds=None, lr=None, puzzle_emb_lr=None,
                  lr_warmup_steps=None, lora_rank=None, ema=None, seed=1, device="cpu", eval_batch_size=4,
                  progress=False)
    assert mode_train_config("full", **kwargs).lr_min_ratio == 1.0  # upstream: flat after warmup
    assert mode_train_config("full", **kwargs, lr_min_ratio=0.1).lr_min_ratio == 0.1


# --- fallback submissions ---------------------------------------------------------------------------------

def test_fallback_submission_of_the_placeholder_file_is_valid(tmp_path):
    path = REPO / "data" / "arc" / "arc-agi_test_challenges.json.gz"
    sub = write_fallback_submission(path, tmp_path / "submission.json")
    assert validate_submission(tmp_path / "submission.json", path) == []
    assert len(sub) == 240


def test_malformed_tasks_get_fallback_attempts_from_their_usable_inputs(tmp_path):
    tasks = malformed_tasks()
    sub = write_fallback_submission(tasks, tmp_path / "submission.json")
    assert sub["bad31col"][0]["attempt_1"] == [[0]]  # 31 columns: unusable
    assert sub["bad31col"][1]["attempt_1"] == [[1, 2], [3, 4]]  # the usable test input of the same task
    assert sub["badcolor"] == [{"attempt_1": [[0]], "attempt_2": [[0]]}]
    assert sub["badtest"] == [{"attempt_1": [[0]], "attempt_2": [[0]]}]
    assert check_submission(tmp_path / "submission.json", tasks) == []
    assert len(fallback_challenges(tasks)["bad31col"]["test"]) == 2


# --- the pipeline on CPU ----------------------------------------------------------------------------------

def test_runner_end_to_end_on_cpu_writes_a_valid_submission_and_logs_every_phase(tmp_path):
    data, solutions = kaggle_tree(tmp_path)
    out = tmp_path / "working"
    result = run_kaggle(KaggleRunConfig(
        data_dir=str(data), solutions_file=str(solutions), weights="scratch", output_dir=str(out),
        budget_minutes=2.0, mode="full", steps=6, batch_size=8, train_aug=3, vote_aug=2, warmup_steps=3,
        canvas_size=10, arch=TINY_ARCH, device="cpu", progress=False))
    assert result["status"] == "ok", result["errors"]
    assert result["seconds"] < 120
    assert check_submission(out / "submission.json", data / "arc-agi_test_challenges.json") == []
    sub = json.loads((out / "submission.json").read_text())
    assert sub["badtest"] == [{"attempt_1": [[0]], "attempt_2": [[0]]}]
    assert result["score"] is not None and len(result["bad_tasks"]) == 3
    events = [json.loads(line) for line in (out / "kaggle_log.jsonl").read_text().splitlines()]
    ended = {e["phase"] for e in events if e["event"] == "end"}
    assert {"validate", "fallback", "build", "warmup", "measure", "plan", "train", "infer", "run"} <= ended
    plan = result["plan"]
    assert 0 < plan["train_steps"] <= 6 and plan["deadline_s"] + plan["infer_s"] + plan["margin_s"] <= 120 + 1e-6


def test_a_task_list_runs_as_a_challenges_file_and_is_scored_with_its_source_solutions(tmp_path):
    task_list = tmp_path / "two_tasks.json"
    task_list.write_text(json.dumps({
        "rule": "two small tasks of the proof list",
        "source": {"challenges": str(REPO / "data/arc/arc-agi_training2_challenges.json.gz"),
                   "solutions": str(REPO / "data/arc/arc-agi_training2_solutions.json.gz")},
        "task_ids": ["0520fde7", "0ca9ddb6"]}))
    out = tmp_path / "working"
    result = run_kaggle(KaggleRunConfig(
        challenges_file=str(task_list), weights="scratch", output_dir=str(out), budget_minutes=2.0, mode="full",
        steps=3, batch_size=4, train_aug=2, vote_aug=2, warmup_steps=2, canvas_size=12, arch=TINY_ARCH,
        device="cpu", progress=False))
    assert result["status"] == "ok", result["errors"]
    assert set(json.loads((out / "submission.json").read_text())) == {"0520fde7", "0ca9ddb6"}
    assert result["score"] is not None and result["test_outputs"] == 2
    assert result["steps_done"] == 3


def test_dihedral_only_augmentation_reaches_the_built_dataset(tmp_path):
    data, _ = kaggle_tree(tmp_path)
    out = tmp_path / "working"
    result = run_kaggle(KaggleRunConfig(
        data_dir=str(data), weights="scratch", output_dir=str(out), budget_minutes=2.0, mode="full", steps=2,
        batch_size=4, train_aug=50, colour_permutation=False, vote_aug=50, warmup_steps=2, canvas_size=10,
        arch=TINY_ARCH, device="cpu", progress=False))
    assert result["status"] == "ok", result["errors"]
    names = json.loads((out / "trm_work" / "data" / "identifiers.json").read_text())[1:]
    augmented = [n for n in names if "|||" in n]
    assert augmented and all(n.endswith("|||0123456789") for n in augmented)
    assert len(names) <= 8 * len({n.split("|||")[0] for n in names})


def test_a_failing_phase_keeps_the_fallback_and_returns_a_status(tmp_path):
    data, _ = kaggle_tree(tmp_path)
    out = tmp_path / "working"
    result = run_kaggle(KaggleRunConfig(data_dir=str(data), weights=str(tmp_path / "missing"),
                                        output_dir=str(out), budget_minutes=1.0, progress=False))
    assert result["status"] == "fallback"
    assert "build: FileNotFoundError" in result["errors"][0]
    assert check_submission(out / "submission.json", data / "arc-agi_test_challenges.json") == []


def test_killing_the_run_mid_training_leaves_a_valid_submission(tmp_path):
    data, _ = kaggle_tree(tmp_path)
    out = tmp_path / "working"
    cmd = [sys.executable, "-m", "trm_core.cli", "kaggle", "--data-dir", str(data), "--weights", "scratch",
           "--output-dir", str(out), "--budget-minutes", "5", "--mode", "full", "--batch-size", "8",
           "--train-aug", "3", "--vote-aug", "2", "--canvas-size", "10", "--device", "cpu", "--warmup-steps", "200",
           "--no-progress", *TINY_ARCH_FLAGS]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    log = out / "kaggle_log.jsonl"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            events = [json.loads(x) for x in log.read_text().splitlines()] if log.is_file() else []
            training = any(e["phase"] == "warmup" and e["event"] == "start" for e in events)
            if training and (out / "trm_work" / "runs" / "warmup" / "metrics.jsonl").is_file():
                break  # optimizer steps are being logged: we are inside the training loop
            assert proc.poll() is None, "the run ended before training started"
            time.sleep(0.2)
        else:
            pytest.fail("training never started")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert check_submission(out / "submission.json", data / "arc-agi_test_challenges.json") == []
    assert not any(e["phase"] == "run" and e["event"] == "end" for e in map(json.loads, log.read_text().splitlines()))


def test_training_may_outrun_its_planned_steps_but_not_its_deadline(tmp_path):
    data, _ = kaggle_tree(tmp_path)
    out = tmp_path / "working"
    result = run_kaggle(KaggleRunConfig(
        data_dir=str(data), weights="scratch", output_dir=str(out), budget_minutes=0.3, mode="full", batch_size=8,
        train_aug=3, vote_aug=2, warmup_steps=3, canvas_size=10, arch=TINY_ARCH, device="cpu", progress=False))
    assert result["status"] == "ok", result["errors"]
    plan = result["plan"]
    from trm_core.config import load_yaml

    adapt = load_yaml(out / "trm_work" / "runs" / "adapt" / "config.yaml")
    assert adapt["max_steps"] == math.ceil(plan["train_steps"] * STEP_HEADROOM) > plan["train_steps"]
    assert adapt["max_train_seconds"] == pytest.approx(plan["train_s"], abs=1e-3)
    assert result["seconds"] < 0.3 * 60 + 5
