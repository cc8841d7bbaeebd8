"""The Kaggle pipeline under a deadline: fallback submission, test-time dataset, adaptation, voting, submission.json.

    # the main CPU job: a tiny model from scratch on shipped tasks, 8 minutes, prints the score
    trm kaggle --challenges-file data/arc/arc-agi_evaluation2_challenges.json.gz \\
        --solutions-file data/arc/arc-agi_evaluation2_solutions.json.gz --weights scratch --canvas-size 12 \\
        --output-dir runs/kaggle_cpu --budget-minutes 8 --mode full --batch-size 16 --train-aug 64 --vote-aug 16
    # on Kaggle (the submission notebook calls run_kaggle with the same fields)
    trm kaggle --data-dir /kaggle/input/arc-prize-2025 --weights /kaggle/input/trm-core-weights \\
        --output-dir /kaggle/working --budget-minutes 690 --mode emb_then_full
    # how many steps fit on 4x L4, from a step time measured on an H100
    trm plan --step-time 0.35 --measured-gpu H100 --target-gpu L4 --gpus 4 --budget-minutes 690

Phases (each timed, logged to `<output_dir>/kaggle_log.jsonl` and printed):
  validate  read the challenges; a malformed task gets fallback attempts, the rest go on
  fallback  a complete, valid submission.json at once (attempts = the test inputs)
  build     the test-time dataset: demonstration pairs (augmented) -> train/, test inputs -> test/
  warmup    a few training steps to measure the real step time (and startup cost) on this machine
  measure   one timed inference batch: seconds per augmented test row
  plan      `plan_budget`: the steps that fit before inference (x hidden_rerun_factor) and a safety margin
  train     the adaptation run, stopped by max_steps and by its wall-clock deadline
  infer     voting over `vote_aug` augmentations (x pooled checkpoints x noisy passes, when asked), the attempts
            chosen by `select` (likelihood rules rescore over `select_views` views: trm_core.rescore); if time
            is short, rescoring is cut first, then noisy passes, pooled checkpoints, augmentations
            (`inference_that_fits`); then submission.json is replaced atomically, after validation
Any exception ends the pipeline with the best submission so far in place; `run_kaggle` returns a status.

Modes: `full` (every weight), `emb_then_full` (embeddings only for the first quarter, then every weight: the
recipe of the only published TRM Kaggle run), `emb_only`, `lora` (rank-1 adapters + embeddings), `none` (no
training: a sanity baseline; unseen tasks only have the mean puzzle embedding, so expect ~0).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trm_core.rescore import DEFAULT_RULE, views_arg

MODES = ("lora", "full", "emb_then_full", "emb_only", "none")
# Base training config of each mode (trm_core/configs); the runner overrides batch, lrs, steps and deadline.
MODE_CONFIGS = {"full": "cfg_posttrain", "emb_then_full": "cfg_posttrain", "emb_only": "cfg_emb_posttrain",
                "lora": "cfg_kaggle_lora", "none": "cfg_posttrain"}
SCRATCH = ("none", "scratch", "")
STEP_HEADROOM = 1.25  # step cap of the adaptation run = planned steps x this (the deadline still binds)
HIDDEN_RERUN_FACTOR = 1.34  # the placeholder file runs ~33% faster than the hidden rerun (Trelis paper l.433)
# Dense bf16 tensor peaks (TFLOPS, vendor datasheets; T4 has no bf16: its fp16 peak). Used only by `trm plan`.
GPU_PEAK_TFLOPS = {"L4": 121.0, "T4": 65.0, "A100": 312.0, "H100": 989.0, "H200": 989.0, "P100": 18.7}
# Relative cost of one optimizer step per mode, from a FLOP count (forward 1 : input-grad 1 : weight-grad 1):
# frozen trunk weights skip the weight gradients. An estimate for `trm plan`; the runner measures instead.
MODE_STEP_COST = {"full": 1.0, "emb_then_full": 0.25 * 2 / 3 + 0.75, "emb_only": 2 / 3, "lora": 2 / 3 + 0.05,
                  "none": 0.0}


@dataclass
class KaggleRunConfig:
    """Every parameter of a Kaggle run (the notebook's parameters cell and `trm kaggle`'s flags)."""

    data_dir: str = "/kaggle/input/arc-prize-2025"  # competition folder (the slug changes every year)
    challenges_file: str | None = None  # default: <data_dir>/arc-agi_test_challenges.json (searched below it)
    solutions_file: str | None = None  # known solutions: the run prints its score
    weights: str = "/kaggle/input/trm-core-weights"  # trunk export folder, checkpoint file, run folder, or scratch
    output_dir: str = "/kaggle/working"  # submission.json and kaggle_log.jsonl go here
    work_dir: str | None = None  # built dataset and training runs; None = <output_dir>/trm_work
    budget_minutes: float = 690.0  # wall clock from the start of run_kaggle to a final submission.json
    mode: str = "emb_then_full"  # lora | full | emb_then_full | emb_only | none
    steps: int | None = None  # cap on optimizer steps; None = as many as the budget allows
    batch_size: int = 384  # global batch (split over GPUs); lowered to what one epoch of the data holds
    micro_batch_size: int | None = None  # rows per forward per process (gradient accumulation); None = all
    eval_batch_size: int = 256  # rows per inference forward per process
    lr: float | None = None  # trunk / LoRA learning rate; None = the mode's config value
    puzzle_emb_lr: float | None = None  # puzzle embedding learning rate; None = the mode's config value
    lr_warmup_steps: int | None = None  # None = the mode's config value, capped at a tenth of the planned steps
    lora_rank: int | None = None  # None = the lora config's rank (1)
    ema: bool | None = None  # None = the mode's config value
    train_aug: int = 1000  # augmented versions per task in the training data
    colour_permutation: bool = True  # False: augment with the 8 dihedral transforms only (<= 8 versions per task)
    dihedral_first: bool = False  # the plain dihedral versions first, then random colour permutations
    train_translation: bool = True  # random placement of the training pairs on the canvas (upstream's default)
    lr_min_ratio: float | None = None  # cosine decay to lr x this by the deadline; None = the config's (1 = flat)
    optimizer: str | None = None  # adam_atan2 | adam_atan2_pytorch; None = the mode's config (the fork's recipes:
    # adam_atan2_pytorch, whose steps are 1.27x upstream's at one lr)
    vote_aug: int = 512  # augmented versions per test input that vote (lowered if time is short)
    # Choosing the attempts (trm_core.rescore). Each extra costs inference rows, counted by the planner; when
    # time is short the runner drops them in this order: rescoring views, noisy passes, pooled checkpoints,
    # then voting augmentations.
    select: str = DEFAULT_RULE  # mean_logprob (measured best) | votes | poe | votes_then_logprob | hybrid
    select_candidates: int = 64  # K: top candidates by votes that a likelihood rule re-ranks
    select_views: int | None = None  # M: views each candidate is scored under (M rows per test input); None = all
    noise_scale: float = 0.0  # latent noise std of the extra noisy passes
    noise_samples: int = 0  # noisy passes per voting row (0 = off); each one costs a full voting pass
    pool_checkpoints: int = 1  # pool the votes of the adaptation run's last N checkpoints (1 = the final only)
    seed: int = 0
    warmup_steps: int = 20  # steps timed before planning (the first third is dropped: compile, caches)
    hidden_rerun_factor: float = HIDDEN_RERUN_FACTOR  # inference time x this, for the slower hidden rerun
    safety_margin: float = 0.05  # fraction of the budget kept free at the end
    device: str = "auto"  # auto | cpu | cuda
    nproc: int | None = None  # training / inference processes; None = visible GPUs (1 on CPU)
    canvas_size: int | None = None  # scratch only (weights carry theirs); None = 30
    arch: dict = field(default_factory=dict)  # ArchConfig overrides (scratch: on top of trm_tiny)
    progress: bool = True


# ----------------------------------------------------------------------------------------------------------
# Planning (pure)
# ----------------------------------------------------------------------------------------------------------

@dataclass
class BudgetPlan:
    """What fits in the time left; every duration in seconds."""

    remaining_s: float  # budget - elapsed
    infer_s: float  # rows * seconds per row * hidden_rerun_factor
    margin_s: float  # safety_margin * budget
    overhead_s: float  # process start, data loading, compile, checkpoint writes
    train_s: float  # the training loop's wall-clock deadline (0 = no time to train)
    train_steps: int  # steps that fit in train_s (capped by max_steps)
    deadline_s: float  # when training must end, in seconds since the start of the run
    rescore_s: float = 0.0  # rescoring rows * seconds per row * hidden_rerun_factor (trm_core.rescore)

    def as_dict(self) -> dict:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def plan_budget(budget_s: float, elapsed_s: float, train_step_s: float, infer_row_s: float, rows_to_infer: int,
                *, hidden_rerun_factor: float = HIDDEN_RERUN_FACTOR, safety_margin: float = 0.05,
                overhead_s: float = 0.0, max_steps: int | None = None, rescore_rows: int = 0) -> BudgetPlan:
    """Size training so that inference, scaled for the hidden rerun, still ends `safety_margin` before the budget.

    `infer_row_s` is wall-clock seconds per augmented test row with every inference process running (one
    process's time per row divided by the number of processes). `rescore_rows`: the extra forward rows of
    candidate rescoring (views x test inputs, `trm_core.rescore`), each as costly as an inference row.
    """
    for name, value in (("budget_s", budget_s), ("elapsed_s", elapsed_s), ("train_step_s", train_step_s),
                        ("infer_row_s", infer_row_s), ("rows_to_infer", rows_to_infer), ("overhead_s", overhead_s),
                        ("rescore_rows", rescore_rows)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if hidden_rerun_factor < 1:
        raise ValueError(f"hidden_rerun_factor must be >= 1, got {hidden_rerun_factor}")
    if not 0 <= safety_margin < 1:
        raise ValueError(f"safety_margin must be in [0, 1), got {safety_margin}")
    remaining = budget_s - elapsed_s
    infer = rows_to_infer * infer_row_s * hidden_rerun_factor
    rescore = rescore_rows * infer_row_s * hidden_rerun_factor
    margin = safety_margin * budget_s
    train_s = max(0.0, remaining - infer - rescore - margin - overhead_s)
    steps = int(train_s // train_step_s) if train_step_s > 0 else 0
    if max_steps is not None:
        steps = min(steps, max_steps)
    if steps == 0:
        train_s = 0.0
    return BudgetPlan(remaining, infer, margin, overhead_s, train_s, steps, elapsed_s + overhead_s + train_s,
                      rescore)


def augmentations_that_fit(seconds: float, infer_row_s: float, test_inputs: int, wanted: int,
                           hidden_rerun_factor: float = HIDDEN_RERUN_FACTOR) -> int:
    """The most voting augmentations (<= wanted) whose inference fits in `seconds` (0 = originals only)."""
    if test_inputs <= 0 or infer_row_s <= 0:
        return wanted
    rows = seconds / (infer_row_s * hidden_rerun_factor)
    return max(0, min(wanted, int(rows // test_inputs) - 1))


def inference_that_fits(seconds: float, infer_row_s: float, test_inputs: int, vote_aug: int, *, views: int = 0,
                        noise_samples: int = 0, pool: int = 1,
                        hidden_rerun_factor: float = HIDDEN_RERUN_FACTOR) -> dict[str, Any]:
    """The inference that fits in `seconds`: per test input (1 + vote_aug) x pool x (1 + noise_samples) voting
    rows plus `views` rescoring rows, each `infer_row_s` x hidden_rerun_factor.

    When it does not all fit, extras go first, each cut to what fits before the next is touched: rescoring views
    (down to 0 = votes decide), then noisy passes, then pooled checkpoints (down to 1), and only then voting
    augmentations (`augmentations_that_fit`). Returns vote_aug, views, noise_samples, pool and `cut` (what was
    reduced, in order).
    """
    out = {"vote_aug": vote_aug, "views": views, "noise_samples": noise_samples, "pool": pool, "cut": []}
    if test_inputs <= 0 or infer_row_s <= 0:
        return out
    per_input = seconds / (infer_row_s * hidden_rerun_factor * test_inputs)  # rows affordable per test input

    def rows() -> int:
        return (1 + out["vote_aug"]) * out["pool"] * (1 + out["noise_samples"]) + out["views"]

    def voting() -> int:
        return rows() - out["views"]

    if rows() > per_input and out["views"] > 0:
        out["views"] = max(0, min(out["views"], math.floor(per_input - voting())))
        out["cut"].append("views")
    if rows() > per_input and out["noise_samples"] > 0:
        per_pass = (1 + out["vote_aug"]) * out["pool"]
        out["noise_samples"] = max(0, min(out["noise_samples"], math.floor(per_input / per_pass) - 1))
        out["cut"].append("noise_samples")
    if rows() > per_input and out["pool"] > 1:
        per_model = (1 + out["vote_aug"]) * (1 + out["noise_samples"])
        out["pool"] = max(1, min(out["pool"], math.floor(per_input / per_model)))
        out["cut"].append("pool")
    if rows() > per_input:
        per_aug = out["pool"] * (1 + out["noise_samples"])
        out["vote_aug"] = augmentations_that_fit(seconds / per_aug, infer_row_s, test_inputs, vote_aug,
                                                 hidden_rerun_factor)
        out["cut"].append("vote_aug")
    return out


def torchrun_command(nproc: int, module_args: list[str], python: str | None = None) -> list[str]:
    """`python -m torch.distributed.run --standalone --nproc-per-node N -m MODULE ...` (torchrun, one node)."""
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    return [python or sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", *module_args]


def train_command(nproc: int, config_path: str | Path, python: str | None = None) -> list[str]:
    """The multi-GPU training command: every rank loads the resolved config written by the runner."""
    return torchrun_command(nproc, ["trm_core.train", "--config-name", str(config_path)], python)


def eval_command(nproc: int, checkpoint: str | Path | list, data_dir: str | Path, output_dir: str | Path, *,
                 challenges: str | Path, batch_size: int, max_eval_augmentations: int,
                 python: str | None = None, selection=None, deadline: float | None = None) -> list[str]:
    """The multi-GPU inference command (`trm eval` under torchrun); several checkpoints pool their votes,
    `selection` (a `trm_core.rescore.Selection`) adds the attempt-selection flags."""
    paths = [checkpoint] if isinstance(checkpoint, (str, Path)) else list(checkpoint)
    args = ["trm_core.cli", "eval", "--checkpoint", str(paths[0])]
    for extra in paths[1:]:
        args += ["--checkpoint", str(extra)]
    args += ["--data", str(data_dir), "--output-dir", str(output_dir), "--challenges", str(challenges),
             "--batch-size", str(batch_size), "--max-eval-augmentations", str(max_eval_augmentations), "--no-progress"]
    if selection is not None:
        args += ["--select", selection.rule, "--select-candidates", str(selection.candidates),
                 "--select-views", "all" if selection.views is None else str(selection.views),
                 "--noise-scale", str(selection.noise_scale),
                 "--noise-samples", str(selection.noise_samples), "--noise-seed", str(selection.noise_seed)]
    if deadline is not None:
        args += ["--deadline", f"{deadline:.3f}"]
    return torchrun_command(nproc, args, python)


def mode_train_config(mode: str, *, data_path: str, output_dir: str, run_name: str, weights: str | None,
                      arch: dict, batch_size: int, micro_batch_size: int | None, steps: int, epochs: int,
                      max_train_seconds: float | None, lr: float | None, puzzle_emb_lr: float | None,
                      lr_warmup_steps: int | None, lora_rank: int | None, ema: bool | None, seed: int,
                      device: str, eval_batch_size: int, progress: bool, lr_min_ratio: float | None = None,
                      planned_steps: int | None = None, optimizer: str | None = None, keep_checkpoints: int = 1):
    """The TrainConfig of one adaptation run (pure apart from reading the shipped YAML).

    `steps` caps the run; `planned_steps` (<= steps, default steps) is what the budget is expected to allow,
    and sizes emb_then_full's embeddings-only phase (its first quarter). keep_checkpoints > 1 (pooling the
    last N checkpoints' votes): a checkpoint every planned_steps / (2N) steps, the last N kept (they span
    the last part of training; the final one is always written)."""
    from trm_core.train import load_config

    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    cfg = load_config(MODE_CONFIGS[mode])
    cfg.arch = dict(arch)
    cfg.data_paths = [data_path]
    cfg.evaluate = False  # no evaluation inside training: the runner infers once, on its own clock
    cfg.global_batch_size, cfg.micro_batch_size = batch_size, micro_batch_size
    cfg.epochs, cfg.eval_interval, cfg.max_steps = epochs, None, steps
    cfg.max_train_seconds = max_train_seconds
    cfg.load_checkpoint = weights
    planned_epochs = epochs * min(1.0, (planned_steps or steps) / steps) if steps else epochs
    cfg.freeze_weights_epochs = int(planned_epochs) // 4 if mode == "emb_then_full" and planned_epochs >= 4 else None
    cfg.lr = cfg.lr if lr is None else lr
    cfg.puzzle_emb_lr = cfg.puzzle_emb_lr if puzzle_emb_lr is None else puzzle_emb_lr
    warmup = cfg.lr_warmup_steps if lr_warmup_steps is None else lr_warmup_steps
    cfg.lr_warmup_steps = min(warmup, max(1, steps // 10)) if lr_warmup_steps is None else warmup
    cfg.lr_min_ratio = cfg.lr_min_ratio if lr_min_ratio is None else lr_min_ratio
    cfg.optimizer = cfg.optimizer if optimizer is None else optimizer
    if mode == "lora" and lora_rank is not None:
        cfg.lora = dict(cfg.lora or {}, rank=lora_rank)
    cfg.ema = cfg.ema if ema is None else ema
    cfg.eval_batch_size = eval_batch_size
    cfg.seed, cfg.device, cfg.progress = seed, device, progress
    cfg.output_dir, cfg.run_name = output_dir, run_name
    cfg.checkpoint_every_eval, cfg.checkpoint_every_n_steps, cfg.keep_last_checkpoints = True, None, 1
    if keep_checkpoints > 1:
        cfg.keep_last_checkpoints = keep_checkpoints
        cfg.checkpoint_every_n_steps = max(1, (planned_steps or steps) // (2 * keep_checkpoints))
    return cfg


# ----------------------------------------------------------------------------------------------------------
# Tasks and fallback submissions
# ----------------------------------------------------------------------------------------------------------

def _usable_grid(value: Any) -> list[list[int]] | None:
    """`value` as a grid Kaggle accepts (rectangular, 1..30 per side, ints 0..9), or None."""
    if not isinstance(value, list) or not 1 <= len(value) <= 30 or not all(isinstance(r, list) for r in value):
        return None
    width = len(value[0])
    if not 1 <= width <= 30 or any(len(r) != width for r in value):
        return None
    if any(type(v) is not int or not 0 <= v <= 9 for r in value for v in r):
        return None
    return [list(r) for r in value]


def fallback_challenges(challenges: dict) -> dict:
    """Every task id of a raw challenges dict with one usable test input grid per test entry.

    Unusable test inputs (or a test list that is not a list) become `[[0]]`; a task whose test field is not a
    list gets one entry, and a task with `"test": []` none (as `trm validate` expects: one entry per test input).
    This is what the submission is validated against, so malformed tasks cannot crash it.
    """
    out = {}
    for task_id, task in challenges.items():
        tests = task.get("test") if isinstance(task, dict) else None
        if not isinstance(tests, list):
            tests = [None]
        inputs = [(_usable_grid(t.get("input")) if isinstance(t, dict) else None) or [[0]] for t in tests]
        out[task_id] = {"test": [{"input": g} for g in inputs]}
    return out


def write_fallback_submission(challenges: dict | str | Path, path: str | Path) -> dict:
    """Write (atomically) and return a valid submission whose attempts are the test inputs ([[0]] if unusable)."""
    from trm_core.data.arc import load_challenges_json
    from trm_core.submission import write_submission

    raw = load_challenges_json(challenges) if isinstance(challenges, (str, Path)) else challenges
    sub = {t: [{"attempt_1": e["input"], "attempt_2": e["input"]} for e in task["test"]]
           for t, task in fallback_challenges(raw).items()}
    write_submission(path, sub)
    return sub


def check_submission(submission: dict | str | Path, challenges: dict | str | Path | None) -> list[str]:
    """Problems of a submission against a (possibly malformed) challenges file; [] = valid for Kaggle."""
    from trm_core.data.arc import load_challenges_json
    from trm_core.submission import validate_submission

    if challenges is None:
        return ["no challenges file was read: nothing to validate against"]
    raw = load_challenges_json(challenges) if isinstance(challenges, (str, Path)) else challenges
    return validate_submission(submission, fallback_challenges(raw))


def find_challenges(data_dir: str | Path) -> Path:
    """`arc-agi_test_challenges.json[.gz]` in `data_dir` or below it (Kaggle nests some competitions)."""
    data_dir = Path(data_dir)
    for pattern in ("arc-agi_test_challenges.json", "arc-agi_test_challenges.json.gz"):
        if (data_dir / pattern).is_file():
            return data_dir / pattern
        found = sorted(data_dir.rglob(pattern))
        if found:
            return found[0]
    found = sorted(data_dir.rglob("*test_challenges.json*"))
    if found:
        return found[0]
    raise FileNotFoundError(f"no arc-agi_test_challenges.json under {data_dir} (set data_dir or challenges_file)")


# ----------------------------------------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------------------------------------

def resolve_weights(weights: str) -> Path | None:
    """The checkpoint file behind `weights` (folder with model.pt, run folder, file), or None for scratch."""
    if weights.strip().lower() in SCRATCH:
        return None
    p = Path(weights)
    if p.is_file():
        return p
    if p.is_dir():
        if (p / "model.pt").is_file():
            return p / "model.pt"
        from trm_core.train import latest_checkpoint

        latest = latest_checkpoint(p)
        if latest is not None and (latest / "model.pt").is_file():
            return latest / "model.pt"
        pts = sorted(p.glob("*.pt")) + sorted(q for q in p.iterdir() if q.name.startswith("step_") and q.is_file())
        if pts:
            return pts[0]
    raise FileNotFoundError(f"weights {weights!r}: no model.pt, checkpoint file or run folder there "
                            "(use --weights scratch to train from scratch)")


def checkpoint_canvas(path: Path) -> int:
    """Canvas side of a checkpoint: sqrt(seq_len) from config.yaml beside it or the arch stored inside; else 30."""
    import torch

    from trm_core.config import load_yaml

    side = path.parent / "config.yaml"
    if side.is_file():
        data = load_yaml(side)
        seq = data.get("seq_len") or (data.get("arch") or {}).get("seq_len")
        if seq:
            return math.isqrt(int(seq))
    obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if isinstance(obj, dict) and isinstance(obj.get("arch"), dict) and obj["arch"].get("seq_len"):
        return math.isqrt(int(obj["arch"]["seq_len"]))
    return 30  # upstream and fork checkpoints: always 30x30


# ----------------------------------------------------------------------------------------------------------
# The runner
# ----------------------------------------------------------------------------------------------------------

class _Log:
    """Phase timing: one JSON line per event in kaggle_log.jsonl, one printed line each.

    A log that cannot be written (a folder in its place, a read-only or full disk) never stops the run: the
    first failure is printed once, naming the file and the reason, and the run goes on with printed lines only,
    so the fallback submission is still written."""

    def __init__(self, path: Path, t0: float):
        self.path, self.t0 = path, t0
        self.phases: dict[str, float] = {}
        self._starts: dict[str, float] = {}
        self.broken: str | None = None  # why the file cannot be written, once it failed

    def _write(self, record: dict) -> None:
        if self.broken is not None:
            return
        try:
            with open(self.path, "a") as f:
                f.write(json.dumps(record, default=str) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            from trm_core.utils import _why_not_writable

            self.broken = ("a folder has that name" if self.path.is_dir()
                           else _why_not_writable(self.path.parent, e))
            print(f"[kaggle] cannot write {self.path}: {self.broken}; logging to the console only", flush=True)

    def event(self, phase: str, event: str, echo: bool = True, **data: Any) -> None:
        now = time.monotonic()
        record = {"time": round(time.time(), 3), "elapsed_s": round(now - self.t0, 3), "phase": phase,
                  "event": event, **data}
        self._write(record)
        if not echo:
            return
        extra = " ".join(f"{k}={v}" for k, v in data.items() if k != "traceback")
        print(f"[kaggle {record['elapsed_s']:8.1f}s] {phase} {event} {extra}".rstrip(), flush=True)

    def start(self, phase: str, **data: Any) -> None:
        self._starts[phase] = time.monotonic()
        self.event(phase, "start", **data)

    def end(self, phase: str, **data: Any) -> None:
        seconds = time.monotonic() - self._starts.pop(phase)
        self.phases[phase] = round(self.phases.get(phase, 0.0) + seconds, 3)
        self.event(phase, "end", seconds=round(seconds, 3), **data)


def _step_times(run_dir: Path) -> list[float]:
    times = []
    path = run_dir / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if "train/step_time_s" in rec:
                times.append(float(rec["train/step_time_s"]))
    return times


def _run_subprocess(cmd: list[str], timeout: float | None, log: _Log, phase: str) -> None:
    """Run `cmd` in its own process group; on timeout kill the whole group (torchrun and its ranks)."""
    log.event(phase, "command", command=" ".join(cmd))
    proc = subprocess.Popen(cmd, start_new_session=True)
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise TimeoutError(f"{phase}: ran past its {timeout:.0f} s deadline, killed")
    if rc != 0:
        raise RuntimeError(f"{phase}: command exited with {rc}: {' '.join(cmd)}")


def _train(cfg_train, nproc: int, work: Path, log: _Log, phase: str, timeout: float | None) -> Path:
    """Run one training config (in-process, or torchrun over `nproc` GPUs); return its newest model.pt."""
    from trm_core import dist as trm_dist
    from trm_core.config import save_yaml
    from trm_core.train import latest_checkpoint, run

    if nproc > 1:
        config_path = work / f"{cfg_train.run_name}.yaml"
        save_yaml(cfg_train, config_path)
        _run_subprocess(train_command(nproc, config_path), timeout, log, phase)
    else:
        try:
            run(cfg_train, command=["trm kaggle", phase])
        finally:
            trm_dist.cleanup()
    ckpt = latest_checkpoint(Path(cfg_train.output_dir) / cfg_train.run_name)
    if ckpt is None:
        raise RuntimeError(f"{phase}: training wrote no checkpoint")
    return ckpt / "model.pt"


def _measure_inference(checkpoint: Path, data_dir: Path, batch_size: int, device: str) -> float:
    """Seconds per test row on one device: one untimed batch (compile, caches), then one timed batch."""
    import torch

    from trm_core import load_checkpoint, predict
    from trm_core.data.dataset import PuzzleDataset
    from trm_core.utils import default_device

    dev = default_device() if device == "auto" else torch.device(device)
    model = load_checkpoint(checkpoint).to(dev).eval()
    # A full eval batch on GPU (what inference will run); a small one on CPU, where time is linear in rows.
    rows = batch_size if dev.type == "cuda" else min(batch_size, 16)
    batch = next(iter(PuzzleDataset([str(data_dir)], "test", global_batch_size=rows).iter_test()))
    keep = batch["example_index"] >= 0
    inputs, pids = batch["inputs"][keep].to(dev), batch["puzzle_identifiers"][keep].to(dev)
    with torch.inference_mode():
        predict(model, inputs[:2], pids[:2])  # untimed: first-call allocations and kernel selection
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        predict(model, inputs, pids)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        seconds = time.perf_counter() - t0
    del model
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return seconds / max(1, int(keep.sum()))


def _selection(cfg: KaggleRunConfig, cut_views: int | None = None, noise_samples: int | None = None):
    """The run's `trm_core.rescore.Selection`; `cut_views` (rescoring rows per test input left after a cut):
    0 = the votes decide (no rescoring)."""
    from trm_core.rescore import Selection

    rule, views = cfg.select, cfg.select_views
    if cut_views is not None:
        rule, views = (cfg.select if cut_views > 0 else "votes"), cut_views
    return Selection(rule=rule, candidates=cfg.select_candidates, views=views, noise_scale=cfg.noise_scale,
                     noise_samples=cfg.noise_samples if noise_samples is None else noise_samples, noise_seed=cfg.seed)


def _last_checkpoints(run_dir: Path, n: int) -> list[Path]:
    """model.pt of the run's last `n` checkpoints, oldest first."""
    from trm_core.train import checkpoint_steps

    steps = sorted(checkpoint_steps(run_dir / "checkpoints"))[-max(1, n):]
    paths = [run_dir / "checkpoints" / f"step_{s}" / "model.pt" for s in steps]
    paths = [p for p in paths if p.is_file()]
    if not paths:
        raise RuntimeError(f"no checkpoint under {run_dir / 'checkpoints'}")
    return paths


def _count_nproc(cfg: KaggleRunConfig) -> int:
    import torch

    if cfg.nproc is not None:
        return cfg.nproc
    if cfg.device == "cpu" or not torch.cuda.is_available():
        return 1
    return max(1, torch.cuda.device_count())


def run_kaggle(cfg: KaggleRunConfig) -> dict:
    """The whole pipeline under `cfg.budget_minutes`; never raises after the fallback is written.

    Returns a summary: status ("ok", "fallback" = the fallback or an earlier result stayed, "failed" = no
    submission could be written), submission path, plan, seconds per phase, errors, and the score when
    solutions are known.
    """
    t0 = time.monotonic()
    if cfg.mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {cfg.mode!r}")
    if cfg.budget_minutes <= 0:
        raise ValueError(f"budget_minutes must be > 0, got {cfg.budget_minutes}")
    if cfg.pool_checkpoints < 1:
        raise ValueError(f"pool_checkpoints must be >= 1, got {cfg.pool_checkpoints}")
    _selection(cfg)  # a wrong rule or a negative count fails here, before any work
    from trm_core.utils import prepare_output_dir

    out = prepare_output_dir(cfg.output_dir)  # OutputPathError names the folder and the reason
    work = Path(cfg.work_dir) if cfg.work_dir else out / "trm_work"
    log = _Log(out / "kaggle_log.jsonl", t0)
    budget_s = cfg.budget_minutes * 60.0
    sub_path = out / "submission.json"
    result: dict[str, Any] = {"status": "failed", "submission": str(sub_path), "mode": cfg.mode, "plan": None,
                              "phases": log.phases, "errors": [], "score": None, "challenges": None, "config": asdict(cfg)}
    log.event("run", "start", mode=cfg.mode, budget_minutes=cfg.budget_minutes, output_dir=str(out))
    phase = "validate"
    solutions_file = cfg.solutions_file
    try:
        # --- validate ------------------------------------------------------------------------------------
        from trm_core.data.arc import is_task_list, load_challenges_json, load_task_file, load_tasks

        log.start(phase)
        challenges_path = Path(cfg.challenges_file) if cfg.challenges_file else find_challenges(cfg.data_dir)
        raw = load_challenges_json(challenges_path)
        if is_task_list(raw):  # e.g. data/proof_tasks.json: ids picked from a challenges file by a written rule
            raw, known, _ = load_task_file(challenges_path, cfg.solutions_file, require_solutions=False)
            work.mkdir(parents=True, exist_ok=True)
            challenges_path = work / "challenges_listed.json"
            challenges_path.write_text(json.dumps(raw))
            if known:
                solutions_file = work / "solutions_listed.json"
                solutions_file.write_text(json.dumps(known))
        result["challenges"] = str(challenges_path)
        tasks, problems = load_tasks(challenges_path, skip_invalid=True)
        result["tasks"], result["bad_tasks"] = len(raw), problems
        log.end(phase, challenges=str(challenges_path), tasks=len(raw), valid=len(tasks), malformed=len(problems))
        for p in problems:
            log.event(phase, "malformed", problem=p)  # a few at most; each gets fallback attempts

        # --- fallback ------------------------------------------------------------------------------------
        phase = "fallback"
        log.start(phase)
        write_fallback_submission(raw, sub_path)
        result["status"] = "fallback"
        log.end(phase, submission=str(sub_path))

        # --- build ---------------------------------------------------------------------------------------
        phase = "build"
        log.start(phase)
        from trm_core.data.build import build_dataset
        from trm_core.data.dataset import PuzzleDataset

        weights = resolve_weights(cfg.weights)
        canvas = checkpoint_canvas(weights) if weights is not None else (cfg.canvas_size or 30)
        if weights is not None and cfg.canvas_size not in (None, canvas):
            raise ValueError(f"canvas_size {cfg.canvas_size} differs from the weights' canvas {canvas}")
        data_dir = work / "data"
        good = {t: raw[t] for t in tasks}
        if not good:
            raise RuntimeError("no valid task to adapt to: the fallback submission stays")
        good_path = work / "challenges_valid.json"
        work.mkdir(parents=True, exist_ok=True)
        good_path.write_text(json.dumps(good))
        # per-task randomness: adaptation starts a new id space (the puzzle table is re-initialised), so
        # upstream's global id order buys nothing here, while per-task draws keep each task's augmentations the
        # same whichever other tasks the hidden file holds (and whichever tasks were skipped as invalid).
        summary = build_dataset(None, data_dir, ["test"], test_set_names=["test"], num_aug=cfg.train_aug,
                                seed=cfg.seed, canvas_size=canvas, skip_invalid=True, progress=cfg.progress,
                                sources=[("test", good_path, None)], colour_permutation=cfg.colour_permutation,
                                dihedral_first=cfg.dihedral_first, enable_train_translation=cfg.train_translation,
                                rng_scheme="per-task")
        for p in summary["problems"]:
            log.event(phase, "skipped", echo=False, problem=p)
        if summary["problems"]:
            print(f"{len(summary['problems'])} task(s) do not fit the {canvas}x{canvas} canvas: fallback attempts "
                  f"(listed in {log.path})", flush=True)
        test_puzzles = json.loads((data_dir / "test_puzzles.json").read_text())
        if not test_puzzles:
            raise RuntimeError(f"no task fits the canvas ({canvas}x{canvas}): the fallback submission stays")
        log.end(phase, canvas=canvas, tasks=len(test_puzzles), train_rows=summary["train"]["examples"],
                test_rows=summary["test"]["examples"], weights=str(weights) if weights else "scratch")

        # Sizes that every later phase needs.
        nproc = _count_nproc(cfg)
        train_ds = PuzzleDataset([str(data_dir)], "train", global_batch_size=1)
        rows_per_epoch = train_ds.rows_per_epoch(0)
        batch = min(cfg.batch_size, rows_per_epoch) // nproc * nproc
        if batch < nproc:
            raise RuntimeError(f"one epoch holds {rows_per_epoch} rows: too few for {nproc} processes")
        if batch != cfg.batch_size:
            log.event("build", "batch_size", requested=cfg.batch_size, used=batch, rows_per_epoch=rows_per_epoch)
        m = train_ds.metadata
        steps_per_epoch = max(1, int(m.total_groups * m.mean_puzzle_examples / batch))
        test_inputs = sum(len(t["test"]) for t in test_puzzles.values())
        arch = dict(cfg.arch)
        if weights is None:
            from trm_core.config import load_yaml
            from trm_core.train import CONFIG_DIR

            arch = {**load_yaml(CONFIG_DIR / "arch" / "trm_tiny.yaml"), **arch}
        device = cfg.device

        def train_config(mode: str, run_name: str, steps: int, seconds: float | None,
                         planned_steps: int | None = None, keep_checkpoints: int = 1):
            epochs = max(1, math.ceil(steps / steps_per_epoch)) if steps else 1
            return mode_train_config(
                mode, data_path=str(data_dir), output_dir=str(work / "runs"), run_name=run_name,
                weights=str(weights) if weights else None, arch=arch, batch_size=batch,
                micro_batch_size=cfg.micro_batch_size, steps=steps, epochs=epochs, max_train_seconds=seconds,
                lr=cfg.lr, puzzle_emb_lr=cfg.puzzle_emb_lr, lr_warmup_steps=cfg.lr_warmup_steps,
                lora_rank=cfg.lora_rank, ema=cfg.ema, seed=cfg.seed, device=device,
                eval_batch_size=cfg.eval_batch_size, progress=cfg.progress, lr_min_ratio=cfg.lr_min_ratio,
                planned_steps=planned_steps, optimizer=cfg.optimizer, keep_checkpoints=keep_checkpoints)

        def left() -> float:
            return budget_s - (time.monotonic() - t0)

        # --- warmup: measure the step time of this mode on this machine -----------------------------------
        step_s, overhead_s = 0.0, 0.0
        if cfg.mode == "none":
            phase = "adapt"
            log.start(phase, note="mode none: no training, every puzzle gets the mean embedding")
            checkpoint = _train(train_config("none", "none", 0, None), 1, work, log, phase, left())
            log.end(phase, checkpoint=str(checkpoint))
        else:
            phase = "warmup"
            # emb_then_full is timed in its slower, full phase; the deadline covers any error.
            warm_mode = "full" if cfg.mode == "emb_then_full" else cfg.mode
            warm_steps = max(2, min(cfg.warmup_steps, cfg.steps or cfg.warmup_steps))
            log.start(phase, steps=warm_steps, processes=nproc, batch_size=batch)
            tw = time.monotonic()
            checkpoint = _train(train_config(warm_mode, "warmup", warm_steps, None), nproc, work, log, phase,
                                left())
            times = _step_times(work / "runs" / "warmup")
            kept = times[len(times) // 3:] or times
            step_s = sorted(kept)[len(kept) // 2] if kept else 0.0
            overhead_s = max(0.0, (time.monotonic() - tw) - sum(times))
            log.end(phase, step_s=round(step_s, 4), startup_s=round(overhead_s, 2), steps_timed=len(times))

        # --- measure inference ---------------------------------------------------------------------------
        phase = "measure"
        log.start(phase)
        row_s = _measure_inference(checkpoint, data_dir, cfg.eval_batch_size, device) / nproc
        rows = PuzzleDataset([str(data_dir)], "test", global_batch_size=1,
                             max_eval_augmentations=cfg.vote_aug).num_test_examples
        log.end(phase, seconds_per_row=round(row_s, 6), rows=rows, test_inputs=test_inputs)

        # --- plan ----------------------------------------------------------------------------------------
        phase = "plan"
        log.start(phase)
        selection = _selection(cfg)
        pool = cfg.pool_checkpoints if cfg.mode != "none" else 1
        views = selection.views_per_input(1 + cfg.vote_aug)
        plan = plan_budget(budget_s, time.monotonic() - t0, step_s, row_s, rows * pool * (1 + cfg.noise_samples),
                           hidden_rerun_factor=cfg.hidden_rerun_factor, safety_margin=cfg.safety_margin,
                           overhead_s=2 * overhead_s, max_steps=0 if cfg.mode == "none" else cfg.steps,
                           rescore_rows=views * test_inputs)
        result["plan"] = dict(plan.as_dict(), step_s=step_s, infer_row_s=row_s, rows=rows, processes=nproc,
                              batch_size=batch, steps_per_epoch=steps_per_epoch)
        log.end(phase, **result["plan"])

        # --- train ---------------------------------------------------------------------------------------
        if plan.train_steps > 0:
            phase = "train"
            log.start(phase, steps=plan.train_steps, deadline_s=round(plan.train_s, 1))
            # The deadline (plan.train_s) ends training; the step cap leaves headroom for a machine faster than
            # the warm-up measured (the learning-rate decay follows the clock, so it still ends at the deadline).
            cap = math.ceil(plan.train_steps * STEP_HEADROOM)
            if cfg.steps is not None:
                cap = min(cap, cfg.steps)
            main_cfg = train_config(cfg.mode, "adapt", cap, plan.train_s, planned_steps=plan.train_steps,
                                    keep_checkpoints=pool)
            checkpoint = _train(main_cfg, nproc, work, log, phase, plan.train_s + 2 * overhead_s + 60)
            done = _step_times(work / "runs" / "adapt")
            result["steps_done"] = len(done)
            log.end(phase, steps_done=len(done), checkpoint=str(checkpoint))
        elif cfg.mode != "none":
            log.event("train", "skipped", reason="no time left for training: inferring with the warm-up weights")

        # --- infer ---------------------------------------------------------------------------------------
        phase = "infer"
        seconds = left() - cfg.safety_margin * budget_s
        checkpoints = _last_checkpoints(work / "runs" / "adapt", pool) if plan.train_steps > 0 else [checkpoint]
        fit = inference_that_fits(seconds, row_s, test_inputs, cfg.vote_aug, views=views,
                                  noise_samples=cfg.noise_samples, pool=len(checkpoints),
                                  hidden_rerun_factor=cfg.hidden_rerun_factor)
        vote_aug, checkpoints = fit["vote_aug"], checkpoints[len(checkpoints) - fit["pool"]:]
        selection = _selection(cfg, cut_views=fit["views"], noise_samples=fit["noise_samples"])
        log.start(phase, vote_aug=vote_aug, seconds_left=round(seconds, 1), select=selection.rule,
                  select_views=fit["views"],
                  noise_samples=selection.noise_samples, pooled_checkpoints=len(checkpoints))
        if fit["cut"]:
            log.event(phase, "less_inference", cut=fit["cut"], wanted={"vote_aug": cfg.vote_aug, "views": views,
                      "noise_samples": cfg.noise_samples, "pool": pool},
                      used={k: fit[k] for k in ("vote_aug", "views", "noise_samples", "pool")})
        if vote_aug < cfg.vote_aug:
            log.event(phase, "fewer_augmentations", wanted=cfg.vote_aug, used=vote_aug)
        eval_dir = work / "eval"
        # Pooling and rescoring are dropped inside the evaluation too if its own inference shows they would end
        # past the safety margin (the measured row time is a one-batch estimate).
        deadline = time.time() + left() - cfg.safety_margin * budget_s
        if nproc > 1:
            _run_subprocess(eval_command(nproc, checkpoints, data_dir, eval_dir, challenges=good_path,
                                         batch_size=cfg.eval_batch_size, max_eval_augmentations=vote_aug,
                                         selection=selection, deadline=deadline),
                            max(60.0, left()), log, phase)
        else:
            from trm_core.evaluate import run_eval

            run_eval(checkpoints, data_dir, eval_dir, batch_size=cfg.eval_batch_size, max_eval_augmentations=vote_aug,
                     challenges=good_path, device=None if device == "auto" else device, progress=cfg.progress,
                     selection=selection, deadline=deadline)
        done = json.loads((eval_dir / "metrics.json").read_text())
        if done.get("rescore_skipped") or done.get("models_pooled", 1) < len(checkpoints):
            log.event(phase, "dropped_at_deadline", rescore_skipped=bool(done.get("rescore_skipped")),
                      pooled=done.get("models_pooled"), given=len(checkpoints))
        predicted = json.loads((eval_dir / "submission.json").read_text())
        merged = json.loads(sub_path.read_text())
        merged.update({t: predicted[t] for t in test_puzzles if t in predicted})
        problems = check_submission(merged, raw)
        if problems:
            raise RuntimeError("merged submission is invalid (kept the previous one): " + "; ".join(problems[:5]))
        from trm_core.submission import write_submission

        write_submission(sub_path, merged)
        result["status"] = "ok"
        log.end(phase, predicted_tasks=len(test_puzzles), submission=str(sub_path))
    except Exception as e:  # noqa: BLE001 - any failure keeps the best submission written so far
        from trm_core.jsonio import InputError

        result["errors"].append(f"{phase}: {type(e).__name__}: {e}")
        if phase == "validate" and isinstance(e, InputError):
            result["input_error"] = str(e)  # the challenges file itself is unusable: `trm kaggle` exits 2
        log.event(phase, "error", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
        if not sub_path.is_file() and "raw" in locals():
            try:
                write_fallback_submission(raw, sub_path)
                result["status"] = "fallback"
            except Exception as e2:  # noqa: BLE001
                result["errors"].append(f"fallback: {type(e2).__name__}: {e2}")
    if solutions_file and sub_path.is_file():
        from trm_core.submission import score_submission

        try:
            result["score"], per_task = score_submission(sub_path, solutions_file)
            result["solved"] = sum(sum(v) for v in per_task.values())
            result["test_outputs"] = sum(len(v) for v in per_task.values())
        except Exception as e:  # noqa: BLE001
            result["errors"].append(f"score: {type(e).__name__}: {e}")
    result["seconds"] = round(time.monotonic() - t0, 3)
    log.event("run", "end", status=result["status"], seconds=result["seconds"], score=result["score"],
              phases=log.phases)
    return result


def format_result(result: dict) -> str:
    """A short human summary: status, score, plan and seconds per phase."""
    lines = [f"status: {result['status']}   submission: {result['submission']}"]
    if result.get("score") is not None:
        lines.append(f"score: {result['score']:.4f} ({result.get('solved')}/{result.get('test_outputs')} "
                     "test outputs, pass@2)")
    if result.get("plan"):
        p = result["plan"]
        lines.append(f"plan: {p['train_steps']} steps in {p['train_s']:.0f} s (step {p['step_s']:.3f} s, "
                     f"{p['processes']} process(es), batch {p['batch_size']}); inference {p['infer_s']:.0f} s "
                     f"for {p['rows']} rows incl. hidden-rerun factor; margin {p['margin_s']:.0f} s")
    lines.append("phases: " + ", ".join(f"{k} {v:.1f}s" for k, v in result["phases"].items()))
    lines += [f"error: {e}" for e in result["errors"]]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# Command lines
# ----------------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """`trm kaggle`: the Kaggle pipeline as one command (exit 0 when a valid submission.json exists)."""
    from trm_core.config import from_dict, parse_value

    d = KaggleRunConfig()
    p = argparse.ArgumentParser(prog="trm kaggle", formatter_class=argparse.RawDescriptionHelpFormatter,
                                description=__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[1])
    p.add_argument("--data-dir", default=d.data_dir, help="competition folder holding arc-agi_test_challenges.json")
    p.add_argument("--challenges-file", default=None,
                   help="a challenges file or a task list like data/proof_tasks.json (instead of searching --data-dir)")
    p.add_argument("--solutions-file", default=None, help="known solutions: print the score")
    p.add_argument("--weights", default=d.weights, help="export folder, checkpoint, run folder, or 'scratch'")
    p.add_argument("--output-dir", default=d.output_dir)
    p.add_argument("--work-dir", default=None, help="dataset and runs (default: OUTPUT_DIR/trm_work)")
    p.add_argument("--budget-minutes", type=float, default=d.budget_minutes)
    p.add_argument("--mode", choices=MODES, default=d.mode)
    p.add_argument("--steps", type=int, default=None, help="cap on optimizer steps (default: what fits)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="global batch")
    p.add_argument("--micro-batch-size", type=int, default=None)
    p.add_argument("--eval-batch-size", type=int, default=d.eval_batch_size)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--puzzle-emb-lr", type=float, default=None)
    p.add_argument("--lr-warmup-steps", type=int, default=None)
    p.add_argument("--lora-rank", type=int, default=None)
    p.add_argument("--ema", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--train-aug", type=int, default=d.train_aug, help="augmentations per task for training")
    p.add_argument("--colour-permutation", action=argparse.BooleanOptionalAction, default=d.colour_permutation,
                   help="permute colours in augmentations (--no-colour-permutation: the 8 dihedral transforms only)")
    p.add_argument("--dihedral-first", action=argparse.BooleanOptionalAction, default=d.dihedral_first,
                   help="augment with the plain dihedral versions first, then random colour permutations")
    p.add_argument("--train-translation", action=argparse.BooleanOptionalAction, default=d.train_translation,
                   help="random placement of training pairs on the canvas")
    p.add_argument("--lr-min-ratio", type=float, default=None,
                   help="cosine decay to lr x this by the training deadline (default: the mode's config, 1 = flat)")
    p.add_argument("--optimizer", choices=("adam_atan2", "adam_atan2_pytorch"), default=None,
                   help="default: the mode's config (the fork's recipes: adam_atan2_pytorch)")
    p.add_argument("--vote-aug", type=int, default=d.vote_aug, help="augmentations per test input that vote")
    p.add_argument("--select", default=d.select,
                   help=f"attempt selection rule (default {d.select}): votes | poe | mean_logprob | "
                        "votes_then_logprob | hybrid (trm_core/rescore.py)")
    p.add_argument("--select-candidates", type=int, default=d.select_candidates,
                   help="K: candidates per test input a likelihood rule re-ranks")
    p.add_argument("--select-views", type=views_arg, default="all", metavar="M|all",
                   help="M: augmented views a candidate is scored under, M inference rows per test input "
                        "(default all: every view that votes)")
    p.add_argument("--noise-scale", type=float, default=d.noise_scale, help="latent noise std of noisy passes")
    p.add_argument("--noise-samples", type=int, default=d.noise_samples,
                   help="noisy inference passes per voting row that also vote (0 = off)")
    p.add_argument("--pool-checkpoints", type=int, default=d.pool_checkpoints,
                   help="pool the votes of the adaptation run's last N checkpoints (1 = the final one)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    p.add_argument("--hidden-rerun-factor", type=float, default=d.hidden_rerun_factor)
    p.add_argument("--safety-margin", type=float, default=d.safety_margin, help="fraction of the budget kept free")
    p.add_argument("--device", default=d.device)
    p.add_argument("--nproc", type=int, default=None, help="processes (default: visible GPUs, 1 on CPU)")
    p.add_argument("--canvas-size", type=int, default=None, help="scratch only (weights carry their canvas)")
    p.add_argument("--arch", action="append", default=[], metavar="KEY=VALUE", help="ArchConfig override")
    p.add_argument("--no-progress", action="store_true")
    args = vars(p.parse_args(argv))
    arch = {}
    for item in args.pop("arch"):
        key, sep, value = item.partition("=")
        if not sep:
            p.error(f"--arch expects KEY=VALUE, got {item!r}")
        arch[key.strip()] = parse_value(value)
    args["progress"] = not args.pop("no_progress")
    cfg = from_dict(KaggleRunConfig, {k: v for k, v in args.items() if v is not None} | {"arch": arch},
                    "trm kaggle")
    result = run_kaggle(cfg)
    print(format_result(result))
    if result["status"] in ("ok", "fallback"):
        return 0
    if result.get("input_error"):
        print(f"trm kaggle: {result['input_error']}", file=sys.stderr)
        return 2
    return 1


def steps_that_fit(budget_minutes: float, step_s: float, infer_row_s: float, test_inputs: int, vote_aug: int,
                   *, hidden_rerun_factor: float = HIDDEN_RERUN_FACTOR, safety_margin: float = 0.05,
                   overhead_s: float = 0.0, rescore_views: int = 0) -> dict[str, dict]:
    """`trm plan`'s table: per mode, the steps that fit and the inference time (the runner's `plan_budget`);
    `rescore_views`: rescoring rows per test input (`Selection.views_per_input`), counted like the runner."""
    rows = test_inputs * (1 + vote_aug)
    table = {}
    for mode, cost in MODE_STEP_COST.items():
        plan = plan_budget(budget_minutes * 60, 0.0, step_s * cost, infer_row_s, rows,
                           hidden_rerun_factor=hidden_rerun_factor, safety_margin=safety_margin,
                           overhead_s=overhead_s, max_steps=0 if mode == "none" else None,
                           rescore_rows=test_inputs * rescore_views)
        table[mode] = dict(plan.as_dict(), step_s=round(step_s * cost, 4))
    return table


def main_plan(argv: list[str] | None = None) -> int:
    """`trm plan`: how many steps of each mode fit in a Kaggle budget, from a measured step time."""
    p = argparse.ArgumentParser(
        prog="trm plan", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="example:\n  trm plan --step-time 0.35 --measured-gpu H100 --target-gpu L4 --gpus 4\n\n"
                    "Scales a step time measured on one GPU (full fine-tuning, at --batch-size) to the target by\n"
                    "their bf16 peaks and divides by --gpus (data parallel, ideal scaling). Other modes are scaled\n"
                    "by FLOP-count estimates; the runner itself measures every mode. Inference per row defaults\n"
                    "to step_time / batch x eval_steps / 3 (forward only, eval_steps ACT steps).\n"
                    f"Known GPUs (TFLOPS): {', '.join(f'{k} {v:g}' for k, v in GPU_PEAK_TFLOPS.items())}")
    p.add_argument("--step-time", type=float, required=True, help="seconds per full fine-tuning step, measured")
    p.add_argument("--measured-gpu", default=None, help="GPU the step time was measured on (default: the target)")
    p.add_argument("--measured-tflops", type=float, default=None, help="its bf16 peak, if not in the table")
    p.add_argument("--target-gpu", default="L4")
    p.add_argument("--target-tflops", type=float, default=None, help="the target's bf16 peak, if not in the table")
    p.add_argument("--gpus", type=int, default=4, help="target GPUs (Kaggle ARC: 4x L4)")
    p.add_argument("--batch-size", type=int, default=384, help="global batch the step time was measured at")
    p.add_argument("--infer-row-time", type=float, default=None, help="seconds per inference row, measured")
    p.add_argument("--eval-steps", type=int, default=16, help="ACT steps per inference row")
    p.add_argument("--test-inputs", type=int, default=259, help="test inputs (placeholder: 259)")
    p.add_argument("--vote-aug", type=int, default=512)
    p.add_argument("--select", default=DEFAULT_RULE, help="attempt selection rule (votes: no rescoring rows)")
    p.add_argument("--select-views", type=views_arg, default="all", metavar="M|all",
                   help="rescoring views per test input (default all: as many rows again as the voting)")
    p.add_argument("--budget-minutes", type=float, default=690.0)
    p.add_argument("--hidden-rerun-factor", type=float, default=HIDDEN_RERUN_FACTOR)
    p.add_argument("--safety-margin", type=float, default=0.05)
    p.add_argument("--overhead-minutes", type=float, default=10.0, help="install, data build, compile, startup")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)

    def peak(name: str | None, given: float | None) -> float:
        if given is not None:
            return given
        key = (name or "").upper()
        if key not in GPU_PEAK_TFLOPS:
            p.error(f"unknown GPU {name!r}: pass its bf16 peak with --measured-tflops / --target-tflops")
        return GPU_PEAK_TFLOPS[key]

    target = peak(args.target_gpu, args.target_tflops)
    measured = peak(args.measured_gpu or args.target_gpu, args.measured_tflops)
    step = args.step_time * measured / target / args.gpus
    row = (args.infer_row_time * measured / target / args.gpus if args.infer_row_time is not None
           else step / args.batch_size * args.eval_steps / 3)
    from trm_core.rescore import Selection

    rescore_views = Selection(rule=args.select, views=args.select_views).views_per_input(1 + args.vote_aug)
    table = steps_that_fit(args.budget_minutes, step, row, args.test_inputs, args.vote_aug,
                           hidden_rerun_factor=args.hidden_rerun_factor, safety_margin=args.safety_margin,
                           overhead_s=args.overhead_minutes * 60, rescore_views=rescore_views)
    if args.json:
        print(json.dumps(table, indent=2))
        return 0
    infer = next(iter(table.values()))["infer_s"]
    rescore = next(iter(table.values()))["rescore_s"]
    print(f"target {args.gpus}x {args.target_gpu} ({target:g} TFLOPS each); full step {step:.3f} s at batch "
          f"{args.batch_size}; inference {row * 1e3:.3f} ms/row")
    print(f"budget {args.budget_minutes:g} min = inference {infer / 60:.1f} min ({args.test_inputs} test inputs x "
          f"{1 + args.vote_aug} versions, x{args.hidden_rerun_factor:g} hidden rerun) + rescoring "
          f"{rescore / 60:.1f} min ({args.select}, {rescore_views} views) + margin "
          f"{args.safety_margin * args.budget_minutes:.0f} min + overhead {args.overhead_minutes:g} min + training")
    print(f"{'mode':<15}{'step (s)':>10}{'steps':>10}{'train (min)':>13}")
    for mode, row_ in table.items():
        print(f"{mode:<15}{row_['step_s']:>10.3f}{row_['train_steps']:>10}{row_['train_s'] / 60:>13.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
