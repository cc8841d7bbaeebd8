"""The Kaggle recipe: adapt a pretrained trunk to the hidden tasks under a deadline, always leaving a valid submission.

    trm kaggle --config main_job --output-dir runs/main_job     # the CPU main job (configs/kaggle/main_job.yaml)
    trm kaggle --data-dir /kaggle/input/arc-prize-2025 --weights /kaggle/input/trm-core-weights \\
        --output-dir /kaggle/working --budget-minutes 690 --mode emb_then_full --train lr=2e-4

One loop runs the phases under one clock, one phase log (`<output_dir>/kaggle_log.jsonl`) and one exception
handler. Each phase takes and returns values and answers to the clock:
  validate  read the challenges; a malformed task gets fallback attempts, the rest go on
  fallback  a complete, valid submission.json at once (attempts = the test inputs)
  build     the test-time dataset in this run's own folder, sized by two probe builds to its share of the time
  warmup    a few training steps time the step and the start-up; one cut short means no training
  measure   load the model for inference, time a batch and the vote
  plan      the steps that fit once inference (x hidden_rerun_factor), its fixed costs, the start-up and a
            safety margin are set aside (`trm_core.budget`)
  train     the adaptation run (`trm_core.adapt`), stopped by its step cap and its wall clock
  infer     rounds of augmentations, originals first, each ending in a complete submission.json written
            atomically; it stops before the deadline with the best one so far
A failed or late phase ends the run with the best submission so far (a cut warm-up or training only means less
training). One run holds an output folder at a time; each builds and trains in a new folder of its own.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, NamedTuple

from trm_core.config import KAGGLE_PRESETS, KaggleRunConfig, load_preset

SCRATCH = ("none", "scratch", "")


@dataclass
class RunResult:
    """What a run did and where it put it (the notebook, the proof and `trm kaggle` read this, not files)."""

    output_dir: Path
    submission: Path
    status: str = "failed"  # ok: the model's answers | fallback: the fallback stayed | failed: no submission
    run_dir: Path | None = None  # this run's own folder: challenges.json, data/, runs/warmup, runs/adapt
    eval_dir: Path | None = None  # predictions.json, metrics.json, per_task.csv, learning_curves.png
    challenges: Path | None = None
    tasks: int = 0
    bad_tasks: list[str] = field(default_factory=list)
    build: dict = field(default_factory=dict)  # tasks, train_aug, canvas and batch actually built
    plan: dict | None = None
    steps_done: int = 0
    final_train: dict = field(default_factory=dict)  # the adaptation run's last training record
    train_metrics: Path | None = None  # its metrics.jsonl
    inference: dict = field(default_factory=dict)  # rounds, rows, levels (versions per input), complete, stopped
    metrics: dict | None = None  # the evaluation's (pass@K and the score when solutions are known)
    score: float | None = None
    solved: int | None = None
    test_outputs: int | None = None
    phases: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    input_error: str | None = None  # the challenges file itself is unusable (`trm kaggle` exits 2)
    seconds: float = 0.0
    config: dict = field(default_factory=dict)

    @property
    def predictions(self) -> Path | None:
        path = self.eval_dir / "predictions.json" if self.eval_dir else None
        return path if path is not None and path.is_file() else None

    def format(self) -> str:
        """A short human summary: status, score, plan, inference and seconds per phase."""
        lines = [f"status: {self.status}   submission: {self.submission}"]
        if self.score is not None:
            lines.append(f"score: {self.score:.4f} ({self.solved}/{self.test_outputs} test outputs, pass@2)")
        if self.plan:
            p = self.plan
            lines.append(f"plan: {p['train_steps']} steps in {p['train_s']:.0f} s (step {p['step_s']:.3f} s, "
                         f"{p['processes']} process(es), batch {p['batch_size']}); inference {p['infer_s']:.0f} s "
                         f"for {p['rows']} rows incl. hidden-rerun factor; margin {p['margin_s']:.0f} s")
        if self.inference:
            i = self.inference
            lines.append(f"inference: {i['rounds']} round(s), {i['rows']} rows, {i['levels']} version(s) per test "
                         f"input" + ("" if i["complete"] else f"; stopped at {i['stopped']}"))
        lines.append("phases: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.phases.items()))
        if self.predictions:
            lines.append(f"report: trm report {self.output_dir}")
        return "\n".join(lines + [f"error: {e}" for e in self.errors])


class Built(NamedTuple):
    data_dir: Path
    weights: Path | None
    tasks: dict  # the raw challenges of the tasks built (test_puzzles.json order)
    batch: int  # global training batch (the configured one, capped by one epoch's rows)
    steps_per_epoch: int


class Warm(NamedTuple):
    checkpoint: Path  # the warm-up's model.pt (or a 0-step run's: the weights with this dataset's puzzle ids)
    step_s: float | None  # seconds per optimizer step; None: no training
    startup_s: float  # a training run's wall clock outside its steps (set-up, data, final checkpoint)


class Timing(NamedTuple):
    row_s: float  # seconds per test row, every device predicting
    vote_s: float  # seconds per row to vote
    fixed_s: float  # seconds to load a checkpoint for inference and to set up the vote
    model: Any  # the warm-up model, loaded for inference


class _Stopped(Exception):
    """A fatal phase failed: the run ends with the best submission so far."""


class KaggleRun:
    """One run of the recipe (`run_kaggle(cfg)` is `KaggleRun(cfg).run()`)."""

    def __init__(self, cfg: KaggleRunConfig) -> None:
        from trm_core.recipe import Clock, PhaseLog

        self.cfg, self.clock = cfg, Clock(cfg.budget_minutes * 60.0)  # first: the budget counts every second

        from trm_core.adapt import MODES, adapt_config
        from trm_core.utils import prepare_output_dir

        if cfg.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {cfg.mode!r}")
        if cfg.budget_minutes <= 0:
            raise ValueError(f"budget_minutes must be > 0, got {cfg.budget_minutes}")
        adapt_config(cfg.mode, cfg.train, {}, scratch=cfg.weights.strip().lower() in SCRATCH)  # bad key: now
        if cfg.pool_checkpoints < 1:
            raise ValueError(f"pool_checkpoints must be >= 1, got {cfg.pool_checkpoints}")
        from trm_core.rescore import Selection

        self.selection = Selection(rule=cfg.select, candidates=cfg.select_candidates, views=cfg.select_views,
                                   noise_scale=cfg.noise_scale, noise_samples=cfg.noise_samples, noise_seed=cfg.seed)
        # Scoring and the last log line follow the hard end, in this reserve.
        self.hard_end = self.clock.budget_s - min(3.0, 0.05 * self.clock.budget_s)
        out = prepare_output_dir(cfg.output_dir)  # OutputPathError names the folder and the reason
        self.result = RunResult(out, out / "submission.json", config=dataclasses.asdict(cfg))
        self.log = PhaseLog(out / "kaggle_log.jsonl", self.clock)
        self.result.phases = self.log.phases
        self.raw: dict | None = None  # the challenges as read
        self.solutions: dict | None = None
        self.write_s, self.nproc = 0.0, 1  # seconds one submission write takes; training processes
        self.busy: Any = None  # what the heartbeat reports on (an Adaptation, or self during inference)

    def run(self) -> RunResult:
        from trm_core.recipe import Heartbeat, hold_output_dir

        r = self.result
        with hold_output_dir(r.output_dir, "trm kaggle run"), self.clock, \
                Heartbeat(self.cfg.heartbeat_minutes * 60, self._heartbeat):
            # A rerun in a used folder: the previous run's submission and evaluation go first, and this run works
            # in a new folder, so nothing of another run can be taken for this one's.
            r.submission.unlink(missing_ok=True)
            shutil.rmtree(r.output_dir / "eval", ignore_errors=True)
            work = Path(self.cfg.work_dir or Path(tempfile.gettempdir()) / "trm_work")
            work.mkdir(parents=True, exist_ok=True)
            r.run_dir = Path(tempfile.mkdtemp(prefix=f"run-{time.strftime('%Y%m%d-%H%M%S')}-", dir=work))
            self.log.tags["run"] = r.run_dir.name  # on every line of the log
            self.log.event("run", "start", mode=self.cfg.mode, budget_minutes=self.cfg.budget_minutes,
                           output_dir=str(r.output_dir), run_dir=str(r.run_dir))
            try:
                tasks = self._phase("validate", self.validate)
                self._phase("fallback", self.fallback)
                built = self._phase("build", self.build, tasks)
                warm = self._phase("warmup", self.warmup, built)
                timing = self._phase("measure", self.measure, built, warm)
                plan = self._phase("plan", self.plan, built, warm, timing)
                checkpoint = self._phase("train", self.train, built, plan, fatal=False)
                self._phase("infer", self.infer, built, checkpoint, timing)
            except _Stopped:
                pass
            self._finish()
        return r

    def _phase(self, name: str, fn, *args, fatal: bool = True):
        """Run one phase under the clock; a failure is logged here, once, and ends the run if `fatal`."""
        from trm_core.jsonio import InputError
        from trm_core.recipe import PhaseTimeout

        t = time.monotonic()
        self.log.event(name, "start")
        try:
            with self.clock.limit(self.hard_end):
                value = fn(*args)
        except (Exception, PhaseTimeout) as e:  # noqa: BLE001 - any failure keeps the best submission so far
            self.result.errors.append(f"{name}: {type(e).__name__}: {e}")
            if name == "validate" and isinstance(e, InputError):
                self.result.input_error = str(e)
            self.log.event(name, "error", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
            if fatal:
                raise _Stopped from None
            return None
        finally:
            self.busy = None
            self.log.add_time(name, time.monotonic() - t)
        self.log.event(name, "end", seconds=round(time.monotonic() - t, 3))
        return value

    def _heartbeat(self) -> str:
        detail = self.busy.heartbeat() if self.busy is not None else "working"
        return f"[kaggle {self.clock.elapsed():8.1f}s] heartbeat: {detail}; {self.clock.left() / 60:.1f} min left"

    # --- phases ---------------------------------------------------------------------------------------------

    def validate(self) -> dict:
        from trm_core.data.arc import find_challenges, load_task_file, parse_tasks

        cfg, r = self.cfg, self.result
        r.challenges = Path(cfg.challenges_file) if cfg.challenges_file else find_challenges(cfg.data_dir)
        # A task list (data/proof_tasks.json) names its tasks and their source files; solutions may come along.
        self.raw, known, _ = load_task_file(r.challenges, cfg.solutions_file, require_solutions=False)
        self.solutions = known or None
        tasks, r.bad_tasks = parse_tasks(self.raw, skip_invalid=True, name=r.challenges.name)
        r.tasks = len(self.raw)
        self.log.event("validate", "tasks", challenges=str(r.challenges), tasks=r.tasks, valid=len(tasks),
                       malformed=len(r.bad_tasks))
        for problem in r.bad_tasks:
            self.log.event("validate", "malformed", problem=problem)  # a few at most; each gets fallback attempts
        return {t: self.raw[t] for t in tasks}

    def fallback(self) -> None:
        from trm_core.submission import write_fallback_submission

        t = time.monotonic()
        with self.clock.shield():
            write_fallback_submission(self.raw, self.result.submission)
        self.write_s, self.result.status = time.monotonic() - t, "fallback"

    def build(self, tasks: dict) -> Built:
        from trm_core.budget import build_that_fits, phase_allowance
        from trm_core.checkpoint import checkpoint_canvas, resolve_checkpoint
        from trm_core.data.build import build_tasks, probe_build_costs
        from trm_core.data.dataset import PuzzleDataset
        from trm_core.dist import count_processes
        from trm_core.jsonio import read_json

        cfg, r = self.cfg, self.result
        weights = None if cfg.weights.strip().lower() in SCRATCH else resolve_checkpoint(cfg.weights)
        canvas = checkpoint_canvas(weights) if weights is not None else (cfg.canvas_size or 30)
        if weights is not None and cfg.canvas_size not in (None, canvas):
            raise ValueError(f"canvas_size {cfg.canvas_size} differs from the weights' canvas {canvas}")
        if not tasks:
            raise RuntimeError("no valid task to adapt to: the fallback submission stays")
        allowance = phase_allowance("build", self.clock.left(self.hard_end))
        until = self.clock.elapsed() + allowance
        # per-task randomness: adaptation starts a new id space (the puzzle table is re-initialised), so upstream's
        # global id order buys nothing here, while per-task draws keep each task's augmentations the same whichever
        # other tasks the hidden file holds (and whichever were skipped as invalid, or left out to fit the time).
        kw = dict(seed=cfg.seed, canvas_size=canvas, colour_permutation=cfg.colour_permutation,
                  dihedral_first=cfg.dihedral_first, enable_train_translation=cfg.train_translation,
                  rng_scheme="per-task")
        n, aug = build_that_fits(self.clock.left(until), *probe_build_costs(tasks, r.run_dir / "probe", **kw),
                                 len(tasks), cfg.train_aug)
        if n == 0:
            raise RuntimeError("not one task's dataset can be built in the build's share of the time left")
        with self.clock.limit(until + 0.5 * allowance):  # the probes' estimate may run short on a loaded machine
            summary = build_tasks(dict(list(tasks.items())[:n]), r.run_dir, aug, progress=cfg.progress, **kw)
        for problem in summary["problems"]:
            self.log.event("build", "skipped", echo=False, problem=problem)  # too big for the canvas: fallback
        test_puzzles = read_json(r.run_dir / "data" / "test_puzzles.json")
        if not test_puzzles:
            raise RuntimeError(f"no task fits the canvas ({canvas}x{canvas}): the fallback submission stays")
        self.nproc = count_processes(cfg.device, cfg.nproc)
        train = PuzzleDataset([str(r.run_dir / "data")], "train", global_batch_size=1)
        batch = min(cfg.batch_size, train.rows_per_epoch(0)) // self.nproc * self.nproc
        if batch < self.nproc:
            raise RuntimeError(f"one epoch holds {train.rows_per_epoch(0)} rows: too few for {self.nproc} processes")
        r.build = dict(tasks=len(test_puzzles), of=len(tasks), train_aug=aug, canvas=canvas, batch=batch,
                       weights=str(weights or "scratch"))
        self.log.event("build", "built", **r.build)
        m = train.metadata
        return Built(r.run_dir / "data", weights, {t: tasks[t] for t in test_puzzles}, batch,
                     max(1, int(m.total_groups * m.mean_puzzle_examples / batch)))

    def warmup(self, built: Built) -> Warm:
        """The step time of this mode on this machine (mode none, or a warm-up cut short: no training)."""
        from trm_core.adapt import Adaptation
        from trm_core.budget import phase_allowance
        from trm_core.recipe import PhaseTimeout

        if self.cfg.mode != "none":
            allowance = phase_allowance("warmup", self.clock.left(self.hard_end))
            steps = max(2, min(self.cfg.warmup_steps, self.cfg.steps or self.cfg.warmup_steps))
            mode = "full" if self.cfg.mode == "emb_then_full" else self.cfg.mode  # timed in its slower phase
            self.busy = run = Adaptation(self._train_config(built, mode, "warmup", steps, 0.5 * allowance),
                                         self.nproc, ["trm kaggle", "warmup"])
            t = time.monotonic()
            try:
                with self.clock.limit(self.clock.elapsed() + allowance):
                    checkpoint = run.run()
                times = run.step_times()
                if times:  # the first third is dropped: compile, caches, allocations
                    step_s = statistics.median(times[len(times) // 3:])
                    startup = max(0.0, time.monotonic() - t - sum(times))
                    self.log.event("warmup", "timed", step_s=round(step_s, 4), startup_s=round(startup, 2),
                                   steps_timed=len(times))
                    return Warm(checkpoint, step_s, startup)
            except PhaseTimeout:
                pass
            self.log.event("warmup", "cut", reason=f"no step timed in its {allowance:.1f} s: no training")
        # The weights as they are, with this dataset's puzzle ids (the mean embedding): a run of 0 steps.
        run = Adaptation(self._train_config(built, "none", "initial", 0, None), 1, ["trm kaggle", "initial"])
        return Warm(run.run(), None, 0.0)

    def measure(self, built: Built, warm: Warm) -> Timing:
        from trm_core.budget import phase_allowance
        from trm_core.data.dataset import PuzzleDataset
        from trm_core.dist import devices
        from trm_core.evaluate import time_inference

        with self.clock.limit(self.clock.elapsed() + phase_allowance("measure", self.clock.left(self.hard_end))):
            t = time.monotonic()
            model = self._load(warm.checkpoint, built)
            test = PuzzleDataset([str(built.data_dir)], "test", global_batch_size=1)
            n = self.cfg.eval_batch_size if next(model.parameters()).device.type == "cuda" else 8
            row_s, out = time_inference(model, test, test.test_rows(0, 1 + self.cfg.vote_aug)[:n])
            fixed = time.monotonic() - t - row_s * len(out["preds"])
            t = time.monotonic()
            acc = self._accumulator(built, model)
            fixed, t = fixed + time.monotonic() - t, time.monotonic()
            acc.add(out["inputs"], out["preds"], out["puzzle_identifiers"], out["q_halt_logits"])
            acc.ranked()
        timing = Timing(row_s / len(devices(self.cfg.device, self.nproc)), (time.monotonic() - t) / len(out["preds"]),
                        fixed, model)
        self.log.event("measure", "timed", seconds_per_row=round(timing.row_s, 6),
                       vote_s_per_row=round(timing.vote_s, 6), fixed_s=round(fixed, 3))
        return timing

    def plan(self, built: Built, warm: Warm, timing: Timing):
        from trm_core.budget import plan_budget, vote_rounds
        from trm_core.data.dataset import PuzzleDataset

        cfg = self.cfg
        rows = PuzzleDataset([str(built.data_dir)], "test", global_batch_size=1,
                             max_eval_augmentations=cfg.vote_aug).num_test_examples
        versions = 1 + min(cfg.vote_aug, self.result.build["train_aug"])
        # Pooled checkpoints and noisy passes repeat every voting row; rescoring adds views per test input.
        passes = (cfg.pool_checkpoints if warm.step_s is not None else 1) * (1 + cfg.noise_samples)
        inputs = sum(len(t["test"]) for t in built.tasks.values())
        fixed = timing.fixed_s + rows * passes * timing.vote_s + len(vote_rounds(versions - 1)) * 3 * self.write_s
        plan = plan_budget(self.hard_end, self.clock.elapsed(), warm.step_s or 0.0, timing.row_s, rows * passes,
                           hidden_rerun_factor=cfg.hidden_rerun_factor, safety_margin=cfg.safety_margin,
                           overhead_s=warm.startup_s, fixed_s=fixed, max_steps=0 if warm.step_s is None else cfg.steps,
                           rescore_rows=self.selection.views_per_input(versions) * inputs)
        self.result.plan = dict(plan.as_dict(), step_s=warm.step_s or 0.0, infer_row_s=timing.row_s, rows=rows,
                                processes=self.nproc, batch_size=built.batch, steps_per_epoch=built.steps_per_epoch)
        self.log.event("plan", "plan", **self.result.plan)
        return plan

    def train(self, built: Built, plan) -> Path | None:
        from trm_core.adapt import Adaptation
        from trm_core.budget import STEP_HEADROOM

        if plan.train_steps == 0:
            if self.cfg.mode != "none":
                self.log.event("train", "skipped", reason="no time left for training: the warm-up weights infer")
            return None
        # The deadline ends training; the step cap leaves headroom for a machine faster than the warm-up measured
        # (the learning-rate decay follows the clock, so it still ends at the deadline).
        cap = min(math.ceil(plan.train_steps * STEP_HEADROOM), self.cfg.steps or math.inf)
        self.busy = run = Adaptation(self._train_config(built, self.cfg.mode, "adapt", cap, plan.train_s,
                                                        plan.train_steps, keep=self.cfg.pool_checkpoints),
                                     self.nproc, ["trm kaggle", "train"])
        try:  # a run late by twice its start-up (and half a minute) is stopped, and the warm-up model infers
            with self.clock.limit(plan.deadline_s + 2 * plan.overhead_s + 30):
                return run.run()
        finally:
            r = self.result
            r.steps_done, r.train_metrics = len(run.step_times()), run.run_dir / "metrics.jsonl"
            r.final_train = next((x for x in reversed(run.records()) if "train/lm_loss" in x), {})

    def infer(self, built: Built, checkpoint: Path | None, timing: Timing) -> None:
        """Vote in rounds until the hard end; each round replaces submission.json with a complete, valid one.
        Then the attempts are chosen (`select`) if the rescoring fits in the time left, else the votes decide."""
        import copy

        from trm_core.budget import inference_that_fits, vote_rounds
        from trm_core.checkpoint import checkpoint_steps
        from trm_core.data.dataset import PuzzleDataset
        from trm_core.dist import devices
        from trm_core.evaluate import infer_in_rounds

        cfg, sel, test = self.cfg, self.selection, PuzzleDataset([str(built.data_dir)], "test", global_batch_size=1)
        adapt = self.result.run_dir / "runs" / "adapt" / "checkpoints"
        pooled = ([adapt / f"step_{s}" / "model.pt" for s in sorted(checkpoint_steps(adapt), reverse=True)]
                  [:cfg.pool_checkpoints] if checkpoint is not None else [None])  # newest first
        inputs = sum(len(t["test"]) for t in built.tasks.values())
        fit = inference_that_fits(self.clock.left(self.hard_end), timing.row_s, inputs, cfg.vote_aug,
                                  views=sel.views_per_input(1 + cfg.vote_aug), noise_samples=sel.noise_samples,
                                  pool=len(pooled), hidden_rerun_factor=cfg.hidden_rerun_factor)
        if fit["cut"]:
            self.log.event("infer", "less_inference", cut=fit["cut"], **{k: fit[k] for k in
                                                                         ("vote_aug", "views", "noise_samples", "pool")})
        models = [[m] + [copy.deepcopy(m).to(d) for d in devices(cfg.device, self.nproc)[1:]]
                  for m in (timing.model if c is None else self._load(c, built) for c in pooled[:fit["pool"]])]
        self.busy, acc, voted = self, self._accumulator(built, models[0][0]), []
        infer_in_rounds(models, test, acc, vote_rounds(fit["vote_aug"]), batch_size=cfg.eval_batch_size,
                        row_s=timing.row_s * len(models) * (1 + fit["noise_samples"]),
                        time_left=lambda: self.clock.left(self.hard_end), reserve_s=3 * self.write_s,
                        on_round=lambda complete: self._write(built, acc.ranked(), "round" if complete else "partial"),
                        noise_scale=sel.noise_scale, noise_samples=fit["noise_samples"], noise_seed=sel.noise_seed,
                        voted=voted, state=self.result.inference)
        self.result.inference.update(pooled=len(models), noise_samples=fit["noise_samples"])
        self.log.event("infer", "done", **self.result.inference)
        ranked, scored = self._select(built, acc, models[0][0], voted, fit["views"], timing)
        left, need = self.clock.left(self.hard_end), 3 * self.write_s + 5
        if left > need:  # the report's files, when time allows
            self._write_report(built, ranked, scored)
        else:  # said, so that a missing eval/ folder is not a mystery
            self.log.event("infer", "report_skipped", reason=f"{left:.1f} s before the hard deadline, {need:.1f} s "
                           "needed: submission.json is written, eval/ (predictions, per-task scores) is not")

    def heartbeat(self) -> str:  # during inference
        i = self.result.inference
        return f"inference: round {i.get('rounds', 0) + 1}, {i.get('rows', 0)} rows predicted"

    # --- helpers --------------------------------------------------------------------------------------------

    def _select(self, built: Built, acc, model, voted: list, views: int, timing: Timing):
        """The attempts by the chosen rule when its rescoring (`views` rows per test input, at the measured row
        time and 1.25 x that for safety) fits before the hard end; else the votes decide. (ranked, scored)."""
        import numpy as np

        from trm_core.evaluate import RESCORE_SAFETY
        from trm_core.rescore import select_attempts

        ranked = acc.ranked()
        sel = dataclasses.replace(self.selection, views=views, rule=self.selection.rule if views else "votes",
                                  noise_samples=0)
        inputs = {t: [p["input"] for p in task["test"]] for t, task in built.tasks.items()}
        need = RESCORE_SAFETY * timing.row_s * sel.views_per_input(self.result.inference.get("levels", 1)) * \
            sum(len(v) for v in inputs.values())
        if not sel.rescores or not voted:
            return ranked, None
        if need + 3 * self.write_s > self.clock.left(self.hard_end):
            self.log.event("infer", "rescore_skipped", reason=f"{need:.1f} s of rescoring would end late: votes")
            return ranked, None
        arrays = {k: np.concatenate([v[k] for v in voted]) for k in voted[0]}
        ranked, scored, info = select_attempts(model, arrays, acc.identifiers, inputs, ranked, sel,
                                               batch_size=self.cfg.eval_batch_size)
        self.result.inference.update(info, selection=sel.as_dict())  # select, rescore_seconds, rescore_rows, ...
        self._write(built, ranked, "selected")
        return ranked, scored

    def _write(self, built: Built, ranked, event: str) -> float:
        """`ranked` as a complete submission.json (the fallback's attempts where none); the seconds it took."""
        from trm_core.submission import merge_into_fallback, write_submission

        t = time.monotonic()
        merged = merge_into_fallback(self.raw, built.tasks, ranked)  # validated: a bug keeps the last file
        with self.clock.shield():
            write_submission(self.result.submission, merged)
        self.result.status = "ok"
        self.log.event("infer", event, rows=self.result.inference.get("rows"), seconds=round(time.monotonic() - t, 3))
        return time.monotonic() - t

    def _write_report(self, built: Built, ranked, scored) -> None:
        """eval/: predictions.json, metrics.json, per_task.csv (with the truth when solutions were given) and
        the learning curves: what `trm report OUTPUT_DIR` draws."""
        from trm_core.evaluate import write_eval_files
        from trm_core.plots import plot_learning_curves
        from trm_core.submission import make_submission

        r = self.result
        r.eval_dir = r.output_dir / "eval"
        r.eval_dir.mkdir(exist_ok=True)
        sel = self.selection if scored is not None else None
        r.metrics = write_eval_files(r.eval_dir, built.tasks, self.solutions, ranked,
                                     make_submission(built.tasks, ranked), {"run_dir": str(r.run_dir), **r.inference},
                                     selection=sel, scored=scored)
        if r.train_metrics is not None and r.train_metrics.is_file():
            plot_learning_curves(r.train_metrics, r.eval_dir / "learning_curves.png")

    def _train_config(self, built: Built, mode: str, name: str, steps: int, seconds: float | None,
                      planned_steps: int | None = None, keep: int = 1):
        """The TrainConfig of one run; `keep` > 1 (pooling the last N checkpoints' votes): a checkpoint every
        planned / (2N) steps, the last N kept (they span the end of training; the final one is always written)."""
        from trm_core.adapt import adapt_config

        cfg = self.cfg
        every = max(1, (planned_steps or steps) // (2 * keep)) if keep > 1 else None
        runner = dict(data_paths=[str(built.data_dir)], evaluate=False, eval_interval=None,
                      global_batch_size=built.batch, max_steps=steps, max_train_seconds=seconds,
                      epochs=max(1, math.ceil(steps / built.steps_per_epoch)) if steps else 1,
                      load_checkpoint=str(built.weights) if built.weights else None,
                      eval_batch_size=cfg.eval_batch_size, seed=cfg.seed, device=cfg.device, progress=cfg.progress,
                      output_dir=str(self.result.run_dir / "runs"), run_name=name, checkpoint_every_eval=True,
                      checkpoint_every_n_steps=every, keep_last_checkpoints=keep)
        return adapt_config(mode, cfg.train, runner, scratch=built.weights is None, planned_steps=planned_steps)

    def _load(self, checkpoint: Path, built: Built):
        from trm_core import load_checkpoint
        from trm_core.dist import devices

        device = devices(self.cfg.device, self.nproc)[0]
        fp32 = {"forward_dtype": "float32"} if device.type == "cpu" else {}  # bf16 is ~9x slower on a CPU
        return load_checkpoint(checkpoint, identifiers_path=built.data_dir / "identifiers.json", device=device, **fp32)

    def _accumulator(self, built: Built, model):
        from trm_core.jsonio import read_json
        from trm_core.voting import VoteAccumulator

        inputs = {t: [p["input"] for p in task["test"]] for t, task in built.tasks.items()}
        return VoteAccumulator(read_json(built.data_dir / "identifiers.json"), inputs,
                               canvas=math.isqrt(model.config.seq_len))

    def _finish(self) -> None:
        """After the hard end: the fallback if nothing was written, the score, the last log line."""
        from trm_core.submission import score_submission, write_fallback_submission

        r = self.result
        try:
            if not r.submission.is_file() and self.raw is not None:
                write_fallback_submission(self.raw, r.submission)
                r.status = "fallback"
            if self.solutions and r.submission.is_file():
                r.score, per_task = score_submission(r.submission, self.solutions)
                r.solved = sum(sum(v) for v in per_task.values())
                r.test_outputs = sum(len(v) for v in per_task.values())
        except Exception as e:  # noqa: BLE001 - the run has ended: report, never raise
            r.errors.append(f"finish: {type(e).__name__}: {e}")
        if r.run_dir is not None and r.run_dir.is_dir() and not any(r.run_dir.iterdir()):
            r.run_dir.rmdir()  # nothing was built (the input was unusable): no empty folder left behind
            r.run_dir = None
        r.seconds = round(self.clock.elapsed(), 3)
        self.log.event("run", "end", status=r.status, seconds=r.seconds, score=r.score, phases=r.phases,
                       eval_dir=str(r.eval_dir) if r.eval_dir else None, run_dir=str(r.run_dir))


def run_kaggle(cfg: KaggleRunConfig) -> RunResult:
    """The whole recipe under `cfg.budget_minutes`; never raises after the fallback is written."""
    return KaggleRun(cfg).run()


def kaggle_budget_minutes(cfg: KaggleRunConfig, environ: Mapping[str, str]) -> tuple[float, str]:
    """(minutes, why) for a run in `environ`: on Kaggle (KAGGLE_KERNEL_RUN_TYPE set) without
    KAGGLE_IS_COMPETITION_RERUN it is a commit run ("Save & Run All", scored on nothing): the commit budget."""
    if "KAGGLE_IS_COMPETITION_RERUN" in environ:
        return cfg.budget_minutes, "competition rerun: the full budget"
    if "KAGGLE_KERNEL_RUN_TYPE" in environ:
        return min(cfg.budget_minutes, cfg.commit_budget_minutes), "commit run (KAGGLE_IS_COMPETITION_RERUN unset)"
    return cfg.budget_minutes, "budget_minutes"


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """`trm kaggle`: the recipe as one command (exit 0 when a valid submission.json exists)."""
    from trm_core.config import add_config_arguments, flags_to_dict, from_dict

    p = argparse.ArgumentParser(prog="trm kaggle", formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="\n\n".join(__doc__.split("\n\n")[:3]))
    p.add_argument("--config", default=None, metavar="PRESET", help="a preset (" + ", ".join(
        sorted(q.stem for q in KAGGLE_PRESETS.glob("*.yaml"))) + ") or a YAML path; the flags given override it")
    add_config_arguments(p, KaggleRunConfig)
    args = p.parse_args(argv)
    preset = load_preset(args.config) if args.config else {}
    del args.config
    cfg = from_dict(KaggleRunConfig, {**preset, **flags_to_dict(args, KaggleRunConfig)}, "trm kaggle")
    minutes, why = kaggle_budget_minutes(cfg, os.environ if environ is None else environ)
    if minutes != cfg.budget_minutes:
        print(f"trm kaggle: {why}: {minutes:g} of {cfg.budget_minutes:g} minutes", flush=True)
    result = run_kaggle(dataclasses.replace(cfg, budget_minutes=minutes))
    print(result.format())
    if result.status in ("ok", "fallback"):
        return 0
    if result.input_error:
        print(f"trm kaggle: {result.input_error}", file=sys.stderr)
        return 2
    return 1
