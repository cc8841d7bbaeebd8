"""Pure planning for a run under a deadline: what fits in the time left. No I/O, no torch; every input is measured
by the caller (`trm_core.kaggle`) or given on the command line (`trm plan`).

    # how many steps of each mode fit on 4x L4 in 690 minutes, from a step time measured on an H100
    trm plan --step-time 0.35 --measured-gpu H100 --target-gpu L4 --gpus 4 --budget-minutes 690

- `phase_allowance`: the most a phase before training may take (a share of the time left), so that a slow build or
  warm-up means less of it, never a late run;
- `build_that_fits`: tasks and training augmentations whose dataset build fits, from two timed probe builds;
- `plan_budget`: training seconds and steps once inference (x the hidden-rerun factor), its fixed costs (model
  load, voting, submission writes), the training start-up and a safety margin are set aside;
- `vote_rounds` / `augmentations_that_fit`: inference in rounds (originals first, then doubling augmentation
  levels), each one a complete submission, so a run that must stop early keeps the best one so far.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from typing import Any

HIDDEN_RERUN_FACTOR = 1.34  # the placeholder file runs ~33% faster than the hidden rerun (Trelis paper l.433)
# Step cap of the adaptation run = planned steps x this; the deadline still binds. Generous on purpose: a warm-up
# timed while another job starts measures slow (0.219 s/step against 0.140 s in the held-out bench's scratch
# column, whose old 1.25x cap ended training at 1,362 of 1,706 planned seconds).
STEP_HEADROOM = 2.0
# The most each phase before training may take, as a share of the time left when it starts: above it the build
# shrinks (fewer augmentations, then fewer tasks), the warm-up is cut (no training) and the inference timing is
# cut short. Training and inference share whatever is left, by `plan_budget`.
PHASE_SHARES = {"build": 0.25, "warmup": 0.15, "measure": 0.2}
# Dense bf16 tensor peaks (TFLOPS, vendor datasheets; T4 has no bf16: its fp16 peak). Used only by `trm plan`.
GPU_PEAK_TFLOPS = {"L4": 121.0, "T4": 65.0, "A100": 312.0, "H100": 989.0, "H200": 989.0, "P100": 18.7}
# Relative cost of one optimizer step per mode, from a FLOP count (forward 1 : input-grad 1 : weight-grad 1):
# frozen trunk weights skip the weight gradients. An estimate for `trm plan`; the runner measures instead.
MODE_STEP_COST = {"full": 1.0, "emb_then_full": 0.25 * 2 / 3 + 0.75, "emb_only": 2 / 3, "lora": 2 / 3 + 0.05,
                  "none": 0.0}


def phase_allowance(phase: str, seconds_left: float) -> float:
    """The most `phase` may take when `seconds_left` remain before the run's hard end."""
    return max(0.0, PHASE_SHARES[phase] * seconds_left)


def build_that_fits(seconds: float, task_s: float, aug_s: float, tasks: int, wanted_aug: int) -> tuple[int, int]:
    """(tasks, augmentations) whose build fits in `seconds`: a task costs `task_s` plus `aug_s` per augmentation
    (both measured by probe builds). Augmentations shrink first; with none left, the tasks do (file order).
    Returns (0, 0) when not even one task fits."""
    for name, value in (("seconds", seconds), ("task_s", task_s), ("aug_s", aug_s), ("tasks", tasks),
                        ("wanted_aug", wanted_aug)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if tasks == 0:
        return 0, 0
    per_task = seconds / tasks
    if aug_s > 0 and per_task < task_s + wanted_aug * aug_s:
        aug = max(0, min(wanted_aug, int((per_task - task_s) / aug_s + 1e-9)))
    else:
        aug = wanted_aug
    cost = task_s + aug * aug_s
    fit = tasks if cost * tasks <= seconds or cost <= 0 else int(seconds / cost + 1e-9)
    return fit, (aug if fit else 0)


@dataclass
class BudgetPlan:
    """What fits in the time left; every duration in seconds."""

    remaining_s: float  # budget - elapsed
    infer_s: float  # rows * seconds per row * hidden_rerun_factor
    margin_s: float  # safety_margin * budget
    overhead_s: float  # before the training loop: process start, model and data load, compile
    train_s: float  # the training loop's wall-clock deadline (0 = no time to train)
    train_steps: int  # steps that fit in train_s (capped by max_steps)
    deadline_s: float  # when training must end, in seconds since the start of the run
    fixed_s: float = 0.0  # after training: final checkpoint, model load for inference, voting, submission writes
    rescore_s: float = 0.0  # rescoring rows * seconds per row * hidden_rerun_factor (trm_core.rescore)

    def as_dict(self) -> dict:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def plan_budget(budget_s: float, elapsed_s: float, train_step_s: float, infer_row_s: float, rows_to_infer: int,
                *, hidden_rerun_factor: float = HIDDEN_RERUN_FACTOR, safety_margin: float = 0.05,
                overhead_s: float = 0.0, fixed_s: float = 0.0, max_steps: int | None = None,
                rescore_rows: int = 0) -> BudgetPlan:
    """Size training so that inference, scaled for the hidden rerun, and its fixed costs still end
    `safety_margin` before the budget.

    `infer_row_s` is wall-clock seconds per augmented test row with every inference device running (one
    device's time per row divided by the number of devices). `rescore_rows`: the extra forward rows of candidate
    rescoring (views x test inputs, `trm_core.rescore`), each as costly as an inference row.
    """
    for name, value in (("budget_s", budget_s), ("elapsed_s", elapsed_s), ("train_step_s", train_step_s),
                        ("infer_row_s", infer_row_s), ("rows_to_infer", rows_to_infer), ("overhead_s", overhead_s),
                        ("fixed_s", fixed_s), ("rescore_rows", rescore_rows)):
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
    train_s = max(0.0, remaining - infer - rescore - margin - overhead_s - fixed_s)
    steps = int(train_s // train_step_s) if train_step_s > 0 else 0
    if max_steps is not None:
        steps = min(steps, max_steps)
    if steps == 0:
        train_s = 0.0
    return BudgetPlan(remaining, infer, margin, overhead_s, train_s, steps, elapsed_s + overhead_s + train_s,
                      fixed_s, rescore)


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


def vote_rounds(vote_aug: int) -> list[tuple[int, int]]:
    """Augmentation levels [lo, hi) of each inference round: the originals (level 0), then 1, 2-3, 4-7, ... up to
    `vote_aug`. Every round ends with a complete submission; each one at most doubles the votes so far."""
    if vote_aug < 0:
        raise ValueError(f"vote_aug must be >= 0, got {vote_aug}")
    rounds, lo = [(0, 1)], 1
    while lo <= vote_aug:
        hi = min(2 * lo, vote_aug + 1)
        rounds.append((lo, hi))
        lo = hi
    return rounds


# ----------------------------------------------------------------------------------------------------------
# `trm plan`
# ----------------------------------------------------------------------------------------------------------

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
    from trm_core.rescore import DEFAULT_RULE, Selection, views_arg
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
    sys.exit(main_plan())
