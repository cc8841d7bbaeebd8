"""The Kaggle recipe: planner, fallback submissions, training configs, the CPU pipeline, deadlines, reruns, locks,
a SIGKILL."""

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
from trm_core.adapt import adapt_config, train_command
from trm_core.budget import (STEP_HEADROOM, augmentations_that_fit, build_that_fits, main_plan, plan_budget,
                             vote_rounds)
from trm_core.config import ConfigError, KaggleRunConfig
from trm_core.evaluate import validate_submission
from trm_core.kaggle import kaggle_budget_minutes, run_kaggle
from trm_core.submission import check_submission, fallback_challenges, write_fallback_submission

# A TRM small enough that a training step and an inference batch take milliseconds on one CPU thread.
TINY_ARCH = {"hidden_size": 32, "num_heads": 2, "L_layers": 1, "H_cycles": 1, "L_cycles": 1,
             "puzzle_emb_ndim": 32, "puzzle_emb_len": 1, "halt_max_steps": 2, "forward_dtype": "float32"}
TINY = [f"arch.{k}={v}" for k, v in TINY_ARCH.items()]
TINY_FLAGS = [x for item in TINY for x in ("--train", item)]


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


def tiny_run(tmp_path: Path, **overrides) -> KaggleRunConfig:
    """A seconds-long CPU run of a tiny TRM from scratch on the Kaggle-like tree (its own work folder)."""
    data, solutions = kaggle_tree(tmp_path)
    base = dict(data_dir=str(data), solutions_file=str(solutions), weights="scratch",
                output_dir=str(tmp_path / "working"), work_dir=str(tmp_path / "work"), budget_minutes=2.0, mode="full",
                steps=6, batch_size=8, train_aug=3, vote_aug=2, warmup_steps=3, canvas_size=10, train=TINY,
                device="cpu", progress=False, heartbeat_minutes=0)
    return KaggleRunConfig(**(base | overrides))


def events(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "kaggle_log.jsonl").read_text().splitlines()]


# --- planner ---------------------------------------------------------------------------------------------

def test_plan_reserves_scaled_inference_margin_overhead_and_fixed_costs_before_training():
    plan = plan_budget(1000, 100, 2.0, 0.01, 10_000, hidden_rerun_factor=1.5, safety_margin=0.1, overhead_s=50,
                       fixed_s=20)
    assert plan.infer_s == pytest.approx(150)  # 10k rows x 10 ms x 1.5
    assert plan.margin_s == pytest.approx(100)
    assert plan.train_s == pytest.approx(1000 - 100 - 150 - 100 - 50 - 20)
    assert plan.train_steps == 290  # 580 s / 2 s
    assert plan.deadline_s == pytest.approx(100 + 50 + 580)
    assert plan.deadline_s + plan.fixed_s + plan.infer_s + plan.margin_s == pytest.approx(1000)


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


def test_inference_rounds_start_with_the_originals_and_double():
    assert vote_rounds(0) == [(0, 1)]
    assert vote_rounds(8) == [(0, 1), (1, 2), (2, 4), (4, 8), (8, 9)]
    levels = [lvl for lo, hi in vote_rounds(512) for lvl in range(lo, hi)]
    assert levels == list(range(513))


def test_the_build_shrinks_augmentations_first_then_tasks():
    assert build_that_fits(100, 0.1, 0.01, 10, 1000) == (10, 990)  # 10 s per task: 0.1 + 990 x 0.01
    assert build_that_fits(0.5, 0.1, 0.01, 10, 1000) == (5, 0)  # no augmentation fits: half the tasks
    assert build_that_fits(0.05, 0.1, 0.01, 10, 1000) == (0, 0)
    assert build_that_fits(1e6, 0.1, 0.01, 10, 8) == (10, 8)


def test_trm_plan_prints_steps_per_mode(capsys):
    assert main_plan(["--step-time", "0.5", "--measured-gpu", "H100", "--target-gpu", "L4", "--gpus", "4"]) == 0
    out = capsys.readouterr().out
    for mode in ("lora", "full", "emb_then_full", "emb_only", "none"):
        assert mode in out
    assert main_plan(["--step-time", "0.5", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert table["none"]["train_steps"] == 0
    assert table["emb_only"]["train_steps"] > table["full"]["train_steps"] > 0


def test_a_commit_run_on_kaggle_gets_the_commit_budget_and_the_rerun_the_full_one():
    cfg = KaggleRunConfig(budget_minutes=690, commit_budget_minutes=10)
    assert kaggle_budget_minutes(cfg, {"KAGGLE_KERNEL_RUN_TYPE": "Batch"})[0] == 10
    assert kaggle_budget_minutes(cfg, {"KAGGLE_KERNEL_RUN_TYPE": "Batch", "KAGGLE_IS_COMPETITION_RERUN": "1"})[0] == 690
    assert kaggle_budget_minutes(cfg, {})[0] == 690  # not on Kaggle: the budget asked for


# --- training configs -------------------------------------------------------------------------------------

def test_torchrun_command_launches_one_process_per_gpu():
    cmd = train_command(4, "/w/adapt.yaml", python="py")
    assert cmd == ["py", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4", "-m",
                   "trm_core.train", "--config-name", "/w/adapt.yaml"]
    with pytest.raises(ValueError):
        train_command(0, "x.yaml")


RUNNER = dict(data_paths=["d"], output_dir="o", run_name="r", load_checkpoint="w.pt", global_batch_size=8,
              max_steps=100, epochs=8, max_train_seconds=60.0, seed=1, device="cpu", eval_batch_size=4,
              progress=False, evaluate=False, eval_interval=None)


@pytest.mark.parametrize("mode", ["full", "emb_then_full", "emb_only", "lora", "none"])
def test_each_mode_maps_to_its_training_recipe(mode):
    overrides = ["puzzle_emb_lr=3e-3"] + (["lora.rank=2"] if mode == "lora" else [])
    cfg = adapt_config(mode, overrides, RUNNER | ({"max_steps": 0} if mode == "none" else {}))
    assert cfg.evaluate is False  # the runner infers once, on its own clock
    assert (cfg.freeze_weights_epochs == 2) == (mode == "emb_then_full")
    assert cfg.freeze_weights == (mode == "emb_only")
    assert (cfg.lora is not None) == (mode == "lora")
    if mode == "lora":
        assert cfg.lora["rank"] == 2
    assert cfg.puzzle_emb_lr == 3e-3 and cfg.max_train_seconds == 60.0 and cfg.eval_interval is None


def test_training_overrides_reach_the_config_and_default_to_the_recipes():
    assert adapt_config("full", [], RUNNER).lr_min_ratio == 1.0  # upstream: flat after warmup
    cfg = adapt_config("full", ["lr_min_ratio=0.1", "lr=2e-3", "ema=false", "lr_warmup_steps=50"], RUNNER)
    assert (cfg.lr_min_ratio, cfg.lr, cfg.ema, cfg.lr_warmup_steps) == (0.1, 2e-3, False, 50)
    assert adapt_config("full", [], RUNNER).lr_warmup_steps == 10  # capped at a tenth of the steps unless set


def test_an_unknown_or_runner_owned_training_key_is_an_error_naming_it(tmp_path, capsys):
    with pytest.raises(ConfigError, match="'lrr'"):
        adapt_config("full", ["lrr=1e-3"], RUNNER)
    with pytest.raises(ConfigError, match="max_steps set by the Kaggle runner"):
        adapt_config("full", ["max_steps=5"], RUNNER)
    from trm_core.cli import main as trm

    assert trm(["kaggle", "--challenges-file", "x.json", "--output-dir", str(tmp_path), "--train", "lrr=1"]) == 2
    assert "unknown key(s) 'lrr'" in capsys.readouterr().err


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

def test_runner_end_to_end_on_cpu_writes_a_valid_submission_logs_every_phase_and_its_report(tmp_path):
    cfg = tiny_run(tmp_path)
    result = run_kaggle(cfg)
    out, data = Path(cfg.output_dir), Path(cfg.data_dir)
    assert result.status == "ok", result.errors
    assert result.seconds < 120
    assert check_submission(out / "submission.json", data / "arc-agi_test_challenges.json") == []
    sub = json.loads((out / "submission.json").read_text())
    assert sub["badtest"] == [{"attempt_1": [[0]], "attempt_2": [[0]]}]
    assert result.score is not None and len(result.bad_tasks) == 3
    ended = {e["phase"] for e in events(out) if e["event"] == "end"}
    assert {"validate", "fallback", "build", "warmup", "measure", "plan", "train", "infer", "run"} <= ended
    plan = result.plan
    assert 0 < plan["train_steps"] <= 6 and plan["deadline_s"] + plan["infer_s"] + plan["margin_s"] <= 120 + 1e-6
    assert result.inference["complete"] and result.inference["levels"] == 3  # the original + 2 augmentations
    # what trm report draws: the truth of every voted task (the solutions were given), pass@K, learning curves
    predictions = json.loads(result.predictions.read_text())["tasks"]
    assert predictions and all(e["truth"] is not None for entries in predictions.values() for e in entries)
    assert "ARC/pass@2" in result.metrics and (result.eval_dir / "learning_curves.png").is_file()
    assert result.run_dir.parent == tmp_path / "work" and (result.run_dir / "runs" / "adapt").is_dir()


def test_inference_that_ends_at_the_deadline_keeps_the_submission_and_says_the_report_was_skipped(tmp_path,
                                                                                                     monkeypatch):
    from trm_core import kaggle

    select = kaggle.KaggleRun._select

    def at_the_deadline(self, *args, **kwargs):
        out = select(self, *args, **kwargs)
        self.hard_end = self.clock.elapsed()  # the hard deadline is now
        return out

    monkeypatch.setattr(kaggle.KaggleRun, "_select", at_the_deadline)
    result = run_kaggle(tiny_run(tmp_path))
    out = tmp_path / "working"
    assert result.status == "ok" and result.eval_dir is None and not (out / "eval").exists()
    assert json.loads((out / "submission.json").read_text())
    (skipped,) = [e for e in events(out) if e["event"] == "report_skipped"]
    assert "eval/" in skipped["reason"]


def test_a_task_list_runs_as_a_challenges_file_and_is_scored_with_its_source_solutions(tmp_path):
    task_list = tmp_path / "two_tasks.json"
    task_list.write_text(json.dumps({
        "rule": "two small tasks of the proof list",
        "source": {"challenges": str(REPO / "data/arc/arc-agi_training2_challenges.json.gz"),
                   "solutions": str(REPO / "data/arc/arc-agi_training2_solutions.json.gz")},
        "task_ids": ["0520fde7", "0ca9ddb6"]}))
    result = run_kaggle(tiny_run(tmp_path, challenges_file=str(task_list), solutions_file=None, steps=3,
                                 batch_size=4, train_aug=2, warmup_steps=2, canvas_size=12))
    assert result.status == "ok", result.errors
    assert set(json.loads(result.submission.read_text())) == {"0520fde7", "0ca9ddb6"}
    assert result.score is not None and result.test_outputs == 2
    assert result.steps_done == 3
    assert not list(result.run_dir.glob("*listed*"))  # the list's tasks stay in memory: no file to read back


def test_dihedral_only_augmentation_reaches_the_built_dataset(tmp_path):
    result = run_kaggle(tiny_run(tmp_path, steps=2, batch_size=4, train_aug=50, colour_permutation=False,
                                 vote_aug=50, warmup_steps=2))
    assert result.status == "ok", result.errors
    names = json.loads((result.run_dir / "data" / "identifiers.json").read_text())[1:]
    augmented = [n for n in names if "|||" in n]
    assert augmented and all(n.endswith("|||0123456789") for n in augmented)
    assert len(names) <= 8 * len({n.split("|||")[0] for n in names})


def test_a_failing_phase_keeps_the_fallback_and_returns_a_status(tmp_path):
    cfg = tiny_run(tmp_path, weights=str(tmp_path / "missing"), budget_minutes=1.0)
    result = run_kaggle(cfg)
    assert result.status == "fallback"
    assert "build: CheckpointError" in result.errors[0] and "missing" in result.errors[0]
    assert check_submission(result.submission, Path(cfg.data_dir) / "arc-agi_test_challenges.json") == []


def test_killing_the_run_mid_training_leaves_a_valid_submission(tmp_path):
    data, _ = kaggle_tree(tmp_path)
    out, work = tmp_path / "working", tmp_path / "work"
    cmd = [sys.executable, "-m", "trm_core", "kaggle", "--data-dir", str(data), "--weights", "scratch",
           "--output-dir", str(out), "--work-dir", str(work), "--budget-minutes", "5", "--mode", "full",
           "--batch-size", "8", "--train-aug", "3", "--vote-aug", "2", "--canvas-size", "10", "--device", "cpu",
           "--warmup-steps", "200", "--no-progress", *TINY_FLAGS]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if list(work.glob("run-*/runs/warmup/metrics.jsonl")):
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
    assert not any(e["phase"] == "run" and e["event"] == "end" for e in events(out))


def test_training_may_outrun_its_planned_steps_but_not_its_deadline(tmp_path):
    result = run_kaggle(tiny_run(tmp_path, budget_minutes=0.3, steps=None))
    assert result.status == "ok", result.errors
    plan = result.plan
    from trm_core.config import load_yaml

    adapt = load_yaml(result.run_dir / "runs" / "adapt" / "config.yaml")
    assert adapt["max_steps"] == math.ceil(plan["train_steps"] * STEP_HEADROOM) > plan["train_steps"]
    assert adapt["max_train_seconds"] == pytest.approx(plan["train_s"], abs=1e-3)
    assert result.seconds < 0.3 * 60 + 2


# --- reruns and a shared output folder ----------------------------------------------------------------------

def test_a_rerun_in_a_used_folder_trains_and_submits_its_own_model(tmp_path):
    first = run_kaggle(tiny_run(tmp_path))
    assert first.status == "ok", first.errors
    # The second run: other tasks, the same output and work folders.
    other = tmp_path / "other_challenges.json"
    ch, _ = write_small_task_files(tmp_path / "src2", n_tasks=2, max_side=8, source="evaluation")
    other.write_text(ch.read_text())
    second = run_kaggle(tiny_run(tmp_path / "b", challenges_file=str(other), solutions_file=None,
                                 output_dir=first.config["output_dir"], work_dir=first.config["work_dir"]))
    assert second.status == "ok", second.errors
    assert second.run_dir != first.run_dir and second.steps_done > 0
    assert set(json.loads(second.submission.read_text())) == set(json.loads(other.read_text()))
    assert json.loads((second.eval_dir / "metrics.json").read_text())["run_dir"] == str(second.run_dir)
    assert list((first.run_dir / "runs" / "adapt" / "checkpoints").glob("step_*"))  # the first run's are kept


def test_a_second_run_on_a_held_output_folder_is_refused_naming_the_first(tmp_path):
    cfg = tiny_run(tmp_path)
    Path(cfg.output_dir).mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from trm_core.recipe import hold_output_dir\n"
        "with hold_output_dir(Path(sys.argv[1]), 'test holder'):\n    print('held', flush=True); time.sleep(60)"),
        cfg.output_dir], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "held"
        from trm_core.recipe import OutputBusyError

        with pytest.raises(OutputBusyError, match=f"test holder pid {holder.pid}"):
            run_kaggle(cfg)
        assert not (Path(cfg.output_dir) / "submission.json").exists()
    finally:
        holder.kill()
        holder.wait()
    assert run_kaggle(cfg).status == "ok"  # released when its holder died


# --- every phase answers to the clock ---------------------------------------------------------------------

def synthetic_tasks(path: Path, n: int, max_side: int = 8) -> Path:
    """`n` tasks: the small real tasks of training2 repeated under new ids (a hidden file of any size)."""
    from trm_core.data.arc import load_challenges_json

    chal = load_challenges_json(REPO / "data" / "arc" / "arc-agi_training2_challenges.json.gz")
    small = [t for t in chal.values()
             if all(max(len(g), len(g[0])) <= max_side for p in t["train"] + t["test"] for g in p.values())]
    path.write_text(json.dumps({f"{i:08x}": small[i % len(small)] for i in range(n)}))
    return path


@pytest.mark.parametrize("tasks, budget_s, tiny", [(400, 12, True), (4000, 60, True), (400, 12, False)],
                         ids=["400-tasks-12s", "4000-tasks-60s", "defaults-12s"])
def test_a_run_ends_within_its_budget_with_a_valid_submission(tasks, budget_s, tiny, tmp_path):
    """Default augmentations (1000 to train, 512 to vote) and batch (384) on a CPU; the last case also the
    default model (trm_tiny at canvas 30). Whatever fits is done; the end is never late."""
    challenges = synthetic_tasks(tmp_path / "hidden.json", tasks)
    cfg = KaggleRunConfig(challenges_file=str(challenges), weights="scratch", output_dir=str(tmp_path / "out"),
                          work_dir=str(tmp_path / "work"), budget_minutes=budget_s / 60, device="cpu",
                          progress=False, heartbeat_minutes=0,
                          **(dict(train=TINY, canvas_size=10) if tiny else {}))
    t0 = time.monotonic()
    result = run_kaggle(cfg)
    seconds = time.monotonic() - t0
    print(f"\n{tasks} tasks, budget {budget_s} s: ended at {seconds:.1f} s, status {result.status}, "
          f"built {result.build}, inference {result.inference}")
    assert seconds <= budget_s + 2
    assert result.status in ("ok", "fallback") and check_submission(result.submission, challenges) == []


# --- inference in rounds ------------------------------------------------------------------------------------

def _round_setup(small_dataset):
    import torch

    from trm_core import build_model
    from trm_core.config import ArchConfig
    from trm_core.data.dataset import PuzzleDataset
    from trm_core.jsonio import read_json
    from trm_core.voting import VoteAccumulator

    test = PuzzleDataset([str(small_dataset)], "test", global_batch_size=1)
    meta = test.metadata
    torch.manual_seed(0)
    model = build_model(ArchConfig(**TINY_ARCH, seq_len=meta.seq_len, vocab_size=meta.vocab_size,
                                   num_puzzle_identifiers=meta.num_puzzle_identifiers)).eval()
    tasks = read_json(small_dataset / "test_puzzles.json")
    inputs = {t: [p["input"] for p in task["test"]] for t, task in tasks.items()}

    def accumulator():
        return VoteAccumulator(read_json(small_dataset / "identifiers.json"), inputs, canvas=10)
    return model, test, tasks, accumulator


def test_rounds_vote_as_one_whole_evaluation_and_replicas_predict_as_one_model(small_dataset, tmp_path):
    """Every round done (on two replicas, one thread each) gives the submission of `evaluate_model`."""
    import copy

    from trm_core.evaluate import evaluate_model, infer_in_rounds
    from trm_core.submission import make_submission

    model, test, tasks, accumulator = _round_setup(small_dataset)
    acc, writes = accumulator(), []
    state = infer_in_rounds([[model, copy.deepcopy(model)]], test, acc, vote_rounds(3), batch_size=5, row_s=0.0,
                            time_left=lambda: 1e9, on_round=lambda complete: writes.append(complete) or 0.0)
    assert state["complete"] and state["rows"] == test.num_test_examples and writes == [True] * len(vote_rounds(3))
    from trm_core.rescore import Selection

    evaluate_model(model, small_dataset, tmp_path, batch_size=7, progress=False, selection=Selection(rule="votes"))
    whole = json.loads((tmp_path / "submission.json").read_text())
    assert make_submission(tasks, acc.ranked()) == whole


def test_inference_stops_before_the_deadline_even_inside_the_originals_and_keeps_what_it_voted(small_dataset):
    from trm_core.evaluate import infer_in_rounds

    model, test, tasks, accumulator = _round_setup(small_dataset)
    clock = {"left": 10.0}
    writes = []

    def on_round(complete):
        writes.append(complete)
        return 0.5

    def time_left():
        clock["left"] -= 4.0  # every check costs the clock 4 s: the third batch would not end in time
        return clock["left"]

    originals = len(test.test_rows(0, 1))
    state = infer_in_rounds([[model]], test, accumulator(), vote_rounds(3), batch_size=2, row_s=0.1,
                            time_left=time_left, on_round=on_round)
    assert not state["complete"] and state["rounds"] == 0 and 0 < state["rows"] < originals
    assert writes == [False]  # the partial round was still written
    assert state["stopped"].startswith("round 1 of 3 (levels 0..0)")


def test_a_heartbeat_reports_while_a_phase_works(tmp_path, capsys):
    result = run_kaggle(tiny_run(tmp_path, heartbeat_minutes=0.005))
    assert result.status == "ok"
    beats = [line for line in capsys.readouterr().out.splitlines() if "heartbeat:" in line]
    assert beats and all("min left" in line for line in beats)
