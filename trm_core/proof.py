"""The learning proof: a small TRM trained from scratch on a few ARC tasks' demonstrations, scored pass@2.

    # the shipped 10 tasks (data/proof_tasks.json), 10 minutes on a 2-core laptop CPU
    python -m trm_core.proof --tasks data/proof_tasks.json
    # any challenges file (solutions from a file, or inline "output"s on the test pairs)
    python -m trm_core.proof --tasks my_challenges.json --solutions my_solutions.json --budget-minutes 5

One command runs the product's own Kaggle pipeline (`trm_core.kaggle.run_kaggle`, mode `full`, weights `scratch`)
on the tasks: a compact-canvas augmented dataset of their demonstration pairs, a few timed warm-up steps and one
timed inference batch to size training to the budget, the real trainer, then voting over every augmented test
input and a submission.json. The test outputs are never trained on: the runner is given the test inputs only,
and the solutions score its final submission.

It prints pass@2 next to two baselines on the same tasks: the test input unchanged, and the most common
demonstration output (the first one seen on ties). Where the time goes (build / train / eval) and the load average
are printed too, because on a shared 2-core machine the same budget buys fewer steps under load.

Why these settings (see PROOF_DEFAULTS): a 30x30 canvas and 16 ACT steps at evaluation make upstream's config
spend ~40 minutes just evaluating; for grids <= 10x10 a 12x12 canvas (grid + EOS + one spare row/column) cuts
the sequence ~6x and attention ~40x (the tiny model trains 14x faster per example at 12 than at 30), and one
ACT step at evaluation keeps inference to seconds while voting over the augmented test inputs recovers what
one forward gets wrong. Colour permutations stay on: without them (`--set colour_permutation=false`) the model
fits every demonstration but cannot copy a colour it never saw (00576224's test input brings a new one), and
with the plain dihedral versions first (`--set dihedral_first=true`) it fits neither group in 10 minutes; an
ensemble of one model of each kind (`--set ensemble=[...]`) halves each one's steps and scores less. The tuning
runs and their scores are in bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

# The CPU-pretrained trunk shipped with the package (trm_core/trunks/cpu_c12_h64/MODEL_CARD.md says how it was made).
SHIPPED_TRUNK = Path(__file__).resolve().parent / "trunks" / "cpu_c12_h64"

# Every setting the proof uses; `--set key=value` overrides any of them (values parsed as JSON).
PROOF_DEFAULTS: dict[str, Any] = {
    # One recursion step (H_cycles=L_cycles=1, one ACT step): on 2 CPU cores the budget buys ~3,500 optimizer
    # steps of this model against ~2,200 for H_cycles=2 and ~1,400 for hidden 128, and steps matter most here.
    "arch": {"hidden_size": 64, "num_heads": 4, "expansion": 4, "L_layers": 2, "H_cycles": 1, "L_cycles": 1,
             "puzzle_emb_ndim": 64, "puzzle_emb_len": 1, "pos_encodings": "rope", "halt_max_steps": 1,
             "halt_max_steps_eval": 1, "halt_exploration_prob": 0.1, "forward_dtype": "float32",
             "loss_type": "softmax_cross_entropy"},
    "num_aug": 100,  # augmented versions per task (train and test); each gets its own puzzle embedding
    "canvas": None,  # None = the largest grid side + 2 (EOS + room to translate), at most 30
    "colour_permutation": True,  # False: the 8 dihedral transforms only
    "dihedral_first": False,  # the plain dihedral versions first, then random colour permutations
    "translate": False,  # random placement on the canvas: a harder problem than this budget can learn
    "global_batch_size": 14,  # at most the demonstration pairs of one epoch (one augmented version per task)
    "lr": 2e-3,  # 5e-3 learns faster at first, then degrades; 1e-2 diverges
    "optimizer": "adam_atan2",  # what lr was tuned with (the `full` mode's fork recipe steps 1.27x further)
    "lr_warmup_steps": 100,
    "puzzle_emb_lr": 1e-2,  # weight decays are the `full` mode's (cfg_posttrain): 0.1 for both
    "eval_batch_size": 256,
    "eval_max_augmentations": None,  # None = every augmented test input votes
    "seed": 0,
    "max_steps": None,  # stop after this many optimizer steps even if time is left (smoke tests)
    "lr_min_ratio": 1.0,  # < 1: cosine decay to lr x this by the deadline (0.1 from 5e-3 fits dihedral-only data)
    "ema": False,
    "safety_margin": 0.02,  # fraction of the budget left free at the end (load on shared machines varies)
    # Choosing the attempts (trm_core.rescore; README "Choosing the two attempts"): the rule, the candidates it
    # re-ranks and the views it scores them under, noisy passes and pooled checkpoints (1 = the final one).
    "select": "mean_logprob",
    "select_candidates": 64,
    "select_views": None,  # None = every view that votes
    "noise_scale": 0.0,
    "noise_samples": 0,
    "pool_checkpoints": 1,
    "mode": "full",  # adaptation mode of the trunk column (the scratch column always trains every weight)
    "adapt": {},  # settings for the trunk column only, on top of these (e.g. {"lr": 1e-3}); see TRUNK_ADAPT
    # A list of setting overrides, one per model: the models train one after another on equal shares of the
    # budget and their votes are pooled (`trm pool`), e.g. [{"colour_permutation": false}, {}]. None = one model.
    "ensemble": None,
}


# ----------------------------------------------------------------------------------------------------------
# Tasks and baselines
# ----------------------------------------------------------------------------------------------------------

def baseline_identity(challenges: dict) -> dict:
    """Submission that answers every test input with itself (both attempts)."""
    return {t: [{"attempt_1": p["input"], "attempt_2": p["input"]} for p in task["test"]]
            for t, task in challenges.items()}


def baseline_most_common_output(challenges: dict) -> dict:
    """Submission that answers with the demonstration output seen most often (first seen on ties)."""
    sub = {}
    for t, task in challenges.items():
        outs = [json.dumps(p["output"]) for p in task["train"]]
        best = json.loads(max(Counter(outs).items(), key=lambda kv: (kv[1], -outs.index(kv[0])))[0])
        sub[t] = [{"attempt_1": best, "attempt_2": best} for _ in task["test"]]
    return sub


def score(submission: dict, solutions: dict) -> tuple[float, int]:
    """(pass@2 over test outputs, tasks with every test output right)."""
    from trm_core.submission import score_submission

    value, per_task = score_submission(submission, solutions)
    return value, sum(all(r) for r in per_task.values())


def max_grid_side(challenges: dict) -> int:
    grids = [g for task in challenges.values() for p in task["train"] + task["test"] for g in p.values()]
    return max(max(len(g), len(g[0]) if g else 0) for g in grids)


# ----------------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------------

def kaggle_config(settings: dict, challenges_file: Path, solutions_file: Path, out: Path, canvas: int | None,
                  budget_minutes: float, progress: bool, weights: str = "scratch", mode: str = "full"):
    """One column of the proof as a Kaggle run: its weights and mode, the proof's settings, no hidden-rerun factor.
    A trunk carries its architecture and canvas; `arch` and `canvas` apply to scratch weights only."""
    from trm_core.kaggle import SCRATCH, KaggleRunConfig

    s = settings
    scratch = str(weights).strip().lower() in SCRATCH
    return KaggleRunConfig(
        challenges_file=str(challenges_file), solutions_file=str(solutions_file), weights=str(weights),
        output_dir=str(out), work_dir=str(out / "work"), budget_minutes=budget_minutes, mode=mode,
        steps=s["max_steps"], batch_size=s["global_batch_size"], eval_batch_size=s["eval_batch_size"],
        lr=s["lr"], puzzle_emb_lr=s["puzzle_emb_lr"], lr_warmup_steps=s["lr_warmup_steps"],
        lr_min_ratio=s["lr_min_ratio"], optimizer=s["optimizer"], ema=s["ema"], train_aug=s["num_aug"],
        colour_permutation=s["colour_permutation"], dihedral_first=s["dihedral_first"], train_translation=s["translate"],
        vote_aug=s["num_aug"] if s["eval_max_augmentations"] is None else s["eval_max_augmentations"],
        seed=s["seed"], hidden_rerun_factor=1.0, safety_margin=s["safety_margin"], device="cpu", nproc=1,
        canvas_size=canvas if scratch else None, arch=dict(s["arch"]) if scratch else {}, progress=progress,
        select=s["select"], select_candidates=s["select_candidates"], select_views=s["select_views"],
        noise_scale=s["noise_scale"], noise_samples=s["noise_samples"], pool_checkpoints=s["pool_checkpoints"])


def _merge(base: dict, overrides: dict) -> dict:
    return {**base, **overrides, "arch": {**base["arch"], **overrides.get("arch", {})}}


def _check_settings(s: dict) -> None:
    unknown = sorted(set(s) - set(PROOF_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown proof setting(s) {unknown}; known: {', '.join(PROOF_DEFAULTS)}")
    members = s["ensemble"] or [{}]
    if not isinstance(members, list) or not all(isinstance(m, dict) for m in members):
        raise ValueError(f"ensemble must be a list of setting dicts, e.g. [{{\"num_aug\": 8}}, {{}}], got {members!r}")
    for k, overrides in enumerate(members):
        unknown = sorted((set(overrides) - set(PROOF_DEFAULTS)) | ({"ensemble", "canvas", "adapt"} & set(overrides)))
        if unknown:
            raise ValueError(f"ensemble member {k}: unknown or not per-model setting(s) {unknown}")
    adapt = s["adapt"]
    if not isinstance(adapt, dict) or set(adapt) - set(PROOF_DEFAULTS) or {"adapt", "canvas"} & set(adapt):
        raise ValueError(f"adapt must be a dict of proof settings for the trunk column, got {adapt!r}")


def _run_column(label: str, mode: str, weights: str, s: dict, files: tuple[Path, Path], out: Path,
                canvas: int, minutes: float, progress: bool) -> dict:
    """Train (unless mode none) and evaluate one column; an ensemble trains one model per member on equal shares
    of the column's budget and pools their votes."""
    from trm_core.kaggle import run_kaggle
    from trm_core.submission import pool_predictions, write_submission

    t0 = time.monotonic()
    members = (s["ensemble"] or [{}]) if mode != "none" else [{}]
    runs = []
    for k, overrides in enumerate(members):
        ms = {**_merge(s, overrides), "ensemble": None}
        share = (minutes - (time.monotonic() - t0) / 60) / (len(members) - k)
        member_out = out if len(members) == 1 else out / f"member_{k}"
        result = run_kaggle(kaggle_config(ms, *files, member_out, canvas, share, progress, weights, mode))
        if result["status"] != "ok":
            raise RuntimeError(f"{label}, run {k}: did not finish: " + "; ".join(result["errors"] or [result["status"]]))
        runs.append((overrides, member_out, result))
    submission = Path(runs[0][2]["submission"])
    if len(runs) > 1:  # one submission from the pooled votes of every member
        submission = write_submission(out / "submission.json", pool_predictions(
            [m_out / "work" / "eval" / "predictions.json" for _, m_out, _ in runs], files[0]))
    member_rows = []
    for overrides, m_out, r in runs:
        metrics = m_out / "work" / "runs" / "adapt" / "metrics.jsonl"
        train_logs = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.is_file() else []
        phases = r["phases"]
        member_rows.append({
            "overrides": overrides, "steps": r.get("steps_done", 0), "plan": r["plan"] or {},
            "score_alone": r["score"], "final_train": train_logs[-1] if train_logs else {},
            "seconds": {"build": phases.get("build", 0.0), "train": phases.get("train", 0.0),
                        "eval": phases.get("infer", 0.0), "total": r["seconds"]}})
    total = round(time.monotonic() - t0, 1)
    seconds = {k: round(sum(m["seconds"][k] for m in member_rows), 1) for k in ("build", "train", "eval")}
    plan = member_rows[0]["plan"]
    return {"method": label, "mode": mode, "weights": str(weights), "submission": str(submission),
            "global_batch_size": plan.get("batch_size"), "steps": sum(m["steps"] for m in member_rows),
            "planned_steps": sum(m["plan"].get("train_steps", 0) for m in member_rows),
            "test_rows": sum(m["plan"].get("rows", 0) for m in member_rows),
            "final_train": member_rows[-1]["final_train"], "members": member_rows if len(runs) > 1 else [],
            "seconds": dict(seconds, total=total, other=round(total - sum(seconds.values()), 1)),
            "settings": s}


def run_proof(challenges: dict, solutions: dict, out_dir: str | Path, *, budget_minutes: float = 10.0,
              settings: dict | None = None, weights: str | Path = "scratch", compare_scratch: bool = True,
              progress: bool = True) -> dict:
    """Score TRM columns on the tasks with `trm_core.kaggle.run_kaggle` (the same runner as a Kaggle submission:
    measured step and inference times size the training), next to two baselines; return scores and timings.

    With a trunk as `weights` the columns are: the trunk with no adaptation (mode none), the trunk adapted for
    `budget_minutes` (mode `settings["mode"]`, with `settings["adapt"]` on top) and, if `compare_scratch`, a
    model trained from scratch for the same budget. With `weights="scratch"`, the scratch column alone.
    """
    from trm_core.kaggle import SCRATCH
    from trm_core.submission import score_submission

    s = _merge(PROOF_DEFAULTS, settings or {})
    _check_settings(s)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    load_start = _loadavg()

    # The tasks form one test set: only their demonstrations are trained on (the runner never sees solutions
    # except to score the final submission).
    files = (out / "challenges.json", out / "solutions.json")
    files[0].write_text(json.dumps({t: {"train": task["train"], "test": [{"input": p["input"]} for p in task["test"]]}
                                    for t, task in challenges.items()}))
    files[1].write_text(json.dumps(solutions))
    canvas = s["canvas"] or min(30, max_grid_side(challenges) + 2)
    t0 = time.monotonic()
    trunk = str(weights).strip().lower() not in SCRATCH
    columns = []
    if trunk:
        adapted = _merge(s, s["adapt"])
        columns += [("trunk, no adaptation", "none", str(weights), adapted, "trunk_none"),
                    (f"trunk adapted ({adapted['mode']}, {budget_minutes:g} min)", adapted["mode"], str(weights),
                     adapted, "trunk_adapted")]
    if not trunk or compare_scratch:
        columns.append((f"from scratch (full, {budget_minutes:g} min)", "full", "scratch", s, "scratch"))
    results = [_run_column(label, mode, w, cs, files, out / folder, canvas, budget_minutes, progress)
               for label, mode, w, cs, folder in columns]

    n_tasks = len(challenges)
    rows = []
    for col in results:
        value, per_task = score_submission(col["submission"], solutions)
        col["solved"] = [t for t, r in per_task.items() if all(r)]
        rows.append({"method": col["method"], "pass@2": value, "tasks solved": len(col["solved"]), "tasks": n_tasks})
    baselines = {"test input unchanged": baseline_identity(challenges),
                 "most common training output": baseline_most_common_output(challenges)}
    for name, sub in baselines.items():
        b_value, n_solved = score(sub, solutions)
        rows.append({"method": name, "pass@2": b_value, "tasks solved": n_solved, "tasks": n_tasks})
    return {"rows": rows, "columns": results, "canvas": canvas, "settings": s, "weights": str(weights),
            "budget_minutes": budget_minutes, "tasks": list(challenges),
            "seconds_total": round(time.monotonic() - t0, 1),
            "loadavg": {"start": load_start, "end": _loadavg()}, "cpu_count": os.cpu_count()}


def _loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def format_result(result: dict) -> str:
    lines = ["| method | pass@2 | tasks solved |", "| --- | --- | --- |"]
    lines += [f"| {r['method']} | {r['pass@2']:.2f} | {r['tasks solved']} / {r['tasks']} |" for r in result["rows"]]
    lines.append(f"\nweights {result['weights']}, canvas {result['canvas']}x{result['canvas']}, "
                 f"{len(result['tasks'])} tasks")
    for col in result["columns"]:
        sec = col["seconds"]
        lines.append(f"{col['method']}: solved {', '.join(col['solved']) or 'none'}; {col['steps']} optimizer steps "
                     f"(planned {col['planned_steps']}) at batch {col['global_batch_size']}, {col['test_rows']} "
                     f"augmented test inputs voted; build {sec['build']} s, train {sec['train']} s, eval "
                     f"{sec['eval']} s, total {sec['total']} s")
        for k, m in enumerate(col.get("members", [])):
            lines.append(f"  model {k} ({json.dumps(m['overrides'])}): {m['steps']} steps, pass@2 alone "
                         f"{m['score_alone']:.2f}")
    lines.append(f"total {result['seconds_total']} s; load average {result['loadavg']['start']} -> "
                 f"{result['loadavg']['end']} on {result['cpu_count']} CPUs")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="trm proof", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="data/heldout/arc1_eval_v1.json", help="task list or challenges file")
    p.add_argument("--weights", default=str(SHIPPED_TRUNK),
                   help="trunk export, checkpoint or run folder (default: the shipped CPU trunk), or 'scratch'")
    p.add_argument("--no-scratch", action="store_true", help="with a trunk: skip the from-scratch column")
    p.add_argument("--solutions", default=None, help="solutions file (default: the list's source, or inline)")
    p.add_argument("--budget-minutes", type=float, default=10.0, help="build + train + eval wall clock")
    p.add_argument("--output-dir", default="runs/proof", help="data, run folder and result.json go here")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a PROOF_DEFAULTS entry, e.g. --set num_aug=100 --set arch.hidden_size=64")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 is faster when other jobs share the cores)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    settings: dict[str, Any] = {"arch": {}}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            value = json.loads(value)
        except ValueError:  # not JSON (or a 5,000-digit number): kept as the string given
            pass
        if key.startswith("arch."):
            settings["arch"][key[5:]] = value
        elif key.startswith("adapt."):
            settings.setdefault("adapt", {})[key[6:]] = value
        elif key in PROOF_DEFAULTS:
            settings[key] = value
        else:
            p.error(f"unknown setting {key!r}; known: {', '.join(PROOF_DEFAULTS)}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        from trm_core.data.arc import load_task_file

        challenges, solutions, _ = load_task_file(args.tasks, args.solutions)
        result = run_proof(challenges, solutions, args.output_dir, budget_minutes=args.budget_minutes,
                           settings=settings, weights=args.weights, compare_scratch=not args.no_scratch,
                           progress=not args.no_progress)
    except (ValueError, RuntimeError, OSError) as e:
        print(f"proof: {e}", file=sys.stderr)
        return 2
    Path(args.output_dir, "result.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(format_result(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
