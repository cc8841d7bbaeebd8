"""The learning proof: the shipped CPU trunk, unadapted and adapted, against a model from scratch on held-out tasks.

    # 10 held-out ARC-AGI-1 tasks, 10 minutes a trained column on a 2-core laptop CPU
    trm proof --tasks data/heldout/arc1_eval_v1.json
    # any task list or challenges file, from scratch only, with other settings
    trm proof --tasks my_challenges.json --solutions my_solutions.json --weights scratch --set lr=1e-3

Each column is a run of the Kaggle recipe (`trm_core.kaggle.run_kaggle`) with the preset
`trm_core/configs/kaggle/proof.yaml`: a compact-canvas augmented dataset of the tasks' demonstration pairs, a
timed warm-up and inference batch that size training to the budget, the real trainer, then voting over every
augmented test input and a submission.json. The test outputs are never trained on: the runner is given the test
inputs only, and the solutions score its final submission.

Columns: with a trunk (`--weights`, default the shipped `trm_core/trunks/cpu_c12_h64`), the trunk with no
adaptation (mode none), the trunk adapted (the preset's `mode`, plus `adapt.KEY=VALUE` settings of that column
only) and, unless `--no-scratch`, a model from scratch (mode full, the preset's `arch.*` model); with
`--weights scratch`, the scratch column alone. Next to them, two baselines on the same tasks: the test input
unchanged, and the most common demonstration output (the first one seen on ties). Where the time goes and the
load average are printed too, because on a shared 2-core machine the same budget buys fewer steps under load.

`--set KEY=VALUE` overrides a preset key (any KaggleRunConfig field: `train_aug`, `steps`, `batch_size`, ...), a
training key (`lr`, `ema`, `arch.hidden_size`: added to `train`), one of the proof's own (`canvas`: default the
largest grid side + 2, at most 30; `ensemble`: a list of setting dicts, one model each on equal shares of the
budget, their votes pooled with `trm pool`), or, as `adapt.KEY=VALUE`, the adapted trunk column's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

# The CPU-pretrained trunk shipped with the package (trm_core/trunks/cpu_c12_h64/MODEL_CARD.md says how it was made).
SHIPPED_TRUNK = Path(__file__).resolve().parent / "trunks" / "cpu_c12_h64"
# The proof's own settings, beside the preset's run fields.
PROOF_SETTINGS: dict[str, Any] = {
    "canvas": None,  # None: the largest grid side + 2 (EOS + room to translate), at most 30
    "adapt": [],  # KEY=VALUE settings of the adapted trunk column only, e.g. ["lr=1e-3"]
    "ensemble": None,  # a list of setting dicts: one model each, votes pooled; None = one model
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


def score(submission: Any, solutions: dict) -> dict:
    """One table row's scores: pass@2 over the test outputs, the tasks with every test output right (and their ids),
    and the mean cell accuracy of the better attempt (0 for a wrong shape): a continuous figure for comparing
    settings when exact solves are a few coin flips."""
    from trm_core.submission import cell_accuracy, read_submission, score_submission

    submission = read_submission(submission)  # a column's is a file: read it once for both scores
    value, per_task = score_submission(submission, solutions)
    cells = cell_accuracy(submission, solutions)[0]
    solved = [t for t, r in per_task.items() if all(r)]
    return {"pass@2": value, "tasks solved": len(solved), "cell accuracy": cells, "solved": solved}


def max_grid_side(challenges: dict) -> int:
    grids = [g for task in challenges.values() for p in task["train"] + task["test"] for g in p.values()]
    return max(max(len(g), len(g[0]) if g else 0) for g in grids)


# ----------------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------------

def apply_settings(run: dict, own: dict, items: Sequence[str]) -> tuple[dict, dict]:
    """`--set` items onto (the preset's run fields, the proof's own settings); returns new dicts.

    A KaggleRunConfig field is set (`train_aug=8`); `canvas`, `ensemble` and `adapt.KEY=VALUE` are the proof's;
    anything else is a training override added to `train` (`lr=1e-3`, `arch.hidden_size=16`), which the runner's
    one loader checks (an unknown key is an error naming it). Values are parsed by `trm_core.config`."""
    from trm_core.config import KaggleRunConfig, field_value, parse_overrides

    fields = {f.name for f in dataclasses.fields(KaggleRunConfig)}
    run, own = {**run, "train": list(run.get("train", []))}, {**own, "adapt": list(own["adapt"])}
    for item in items:
        (key, value), = parse_overrides([item], "--set").items()
        if key == "adapt":
            own["adapt"].append(item.split(".", 1)[1])
        elif key in fields:
            run[key] = field_value(KaggleRunConfig, key, value)
        elif key in PROOF_SETTINGS:
            own[key] = value
        else:
            run["train"].append(item)
    return run, own


def _items(settings: dict) -> list[str]:
    """{"train_aug": 3, "arch.hidden_size": 16} -> ["train_aug=3", "arch.hidden_size=16"] (values as JSON)."""
    return [f"{k}={json.dumps(v)}" for k, v in settings.items()]


def column_config(run: dict, column: str, weights: str, files: tuple[Path, Path], out: Path, canvas: int,
                  minutes: float, progress: bool):
    """One column's Kaggle run: the proof's run fields, its weights and mode; a trunk carries its architecture
    and canvas, so the `arch.*` training overrides and the canvas apply to the scratch column only."""
    from trm_core.config import KaggleRunConfig, from_dict

    scratch = column == "scratch"
    fields = {**run, "challenges_file": str(files[0]), "solutions_file": str(files[1]), "weights": str(weights),
              "output_dir": str(out), "work_dir": str(out / "work"), "budget_minutes": minutes,
              "progress": progress, "heartbeat_minutes": 0,
              "mode": {"scratch": "full", "trunk_none": "none"}.get(column, run["mode"]),
              "canvas_size": canvas if scratch else None,
              "train": [t for t in run["train"] if scratch or not t.startswith("arch.")]}
    return from_dict(KaggleRunConfig, fields, f"proof column {column}")


def _run_column(label: str, column: str, weights: str, run: dict, own: dict, files: tuple[Path, Path], out: Path,
                canvas: int, minutes: float, progress: bool) -> dict:
    """Train (unless mode none) and evaluate one column; an ensemble trains one model per member on equal shares
    of the column's budget and pools their votes."""
    from trm_core.kaggle import run_kaggle
    from trm_core.submission import pool_predictions, write_submission

    t0 = time.monotonic()
    members = (own["ensemble"] or [{}]) if column != "trunk_none" else [{}]
    runs = []
    for k, overrides in enumerate(members):
        member_run = apply_settings(run, own, _items(overrides))[0]
        share = (minutes - (time.monotonic() - t0) / 60) / (len(members) - k)
        member_out = out if len(members) == 1 else out / f"member_{k}"
        result = run_kaggle(column_config(member_run, column, weights, files, member_out, canvas, share, progress))
        if result.status != "ok":
            raise RuntimeError(f"{label}, run {k}: did not finish: " + "; ".join(result.errors or [result.status]))
        runs.append((overrides, result))
    submission = runs[0][1].submission
    if len(runs) > 1:  # one submission from the pooled votes of every member
        submission = write_submission(out / "submission.json", pool_predictions(
            [r.predictions for _, r in runs], files[0]))
    member_rows = [{"overrides": o, "steps": r.steps_done, "plan": r.plan or {}, "score_alone": r.score,
                    "final_train": r.final_train, "test_rows": r.inference.get("rows", 0), "run_dir": str(r.run_dir),
                    "seconds": {"build": r.phases.get("build", 0.0), "train": r.phases.get("train", 0.0),
                                "eval": r.phases.get("infer", 0.0), "total": r.seconds}} for o, r in runs]
    total = round(time.monotonic() - t0, 1)
    seconds = {k: round(sum(m["seconds"][k] for m in member_rows), 1) for k in ("build", "train", "eval")}
    plan = member_rows[0]["plan"]
    return {"method": label, "mode": runs[0][1].config["mode"], "weights": str(weights),
            "submission": str(submission), "global_batch_size": plan.get("batch_size"),
            "steps": sum(m["steps"] for m in member_rows),
            "planned_steps": sum(m["plan"].get("train_steps", 0) for m in member_rows),
            "test_rows": sum(m["test_rows"] for m in member_rows), "run_dir": member_rows[-1]["run_dir"],
            "final_train": member_rows[-1]["final_train"], "members": member_rows if len(runs) > 1 else [],
            "seconds": dict(seconds, total=total, other=round(total - sum(seconds.values()), 1)),
            "settings": runs[0][1].config}


def run_proof(challenges: dict, solutions: dict, out_dir: str | Path, *, budget_minutes: float | None = None,
              settings: Mapping[str, Any] | Sequence[str] = (), weights: str | Path = "scratch",
              compare_scratch: bool = True,
              progress: bool = True) -> dict:
    """Score the columns on the tasks with the Kaggle recipe (`trm_core.kaggle.run_kaggle`, the preset
    `configs/kaggle/proof.yaml`; the same runner as a Kaggle submission: measured step and inference times size
    the training), next to two baselines; return scores and timings.

    `settings`: `--set` items (["train_aug=8", "adapt.lr=1e-4"]) or a dict of them ({"train_aug": 8}). With a trunk as
    `weights` the columns are: the trunk with no adaptation (mode none), the trunk adapted for `budget_minutes`
    and, if `compare_scratch`, a model trained from scratch for the same budget. With "scratch", that one alone.
    """
    from trm_core.config import load_preset
    from trm_core.kaggle import SCRATCH

    items = _items(settings) if isinstance(settings, Mapping) else list(settings)
    run, own = apply_settings(load_preset("proof"), PROOF_SETTINGS, items)
    minutes = float(budget_minutes if budget_minutes is not None else run["budget_minutes"])
    _check_own(own)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    load_start = _loadavg()

    # The tasks form one test set: only their demonstrations are trained on (the runner never sees solutions
    # except to score the final submission).
    files = (out / "challenges.json", out / "solutions.json")
    files[0].write_text(json.dumps({t: {"train": task["train"], "test": [{"input": p["input"]} for p in task["test"]]}
                                    for t, task in challenges.items()}))
    files[1].write_text(json.dumps(solutions))
    canvas = own["canvas"] or min(30, max_grid_side(challenges) + 2)
    t0 = time.monotonic()
    trunk = str(weights).strip().lower() not in SCRATCH
    columns = []
    if trunk:
        adapted = apply_settings(run, own, own["adapt"])[0]
        columns += [("trunk, no adaptation", "trunk_none", str(weights), adapted),
                    (f"trunk adapted ({adapted['mode']}, {minutes:g} min)", "trunk_adapted", str(weights), adapted)]
    if not trunk or compare_scratch:
        columns.append((f"from scratch (full, {minutes:g} min)", "scratch", "scratch", run))
    results = [_run_column(label, column, w, cs, own, files, out / column, canvas, minutes, progress)
               for label, column, w, cs in columns]

    n_tasks = len(challenges)
    rows = []
    for col in results:
        scores = score(col["submission"], solutions)
        col["solved"] = scores.pop("solved")
        rows.append({"method": col["method"], **scores, "tasks": n_tasks})
    baselines = {"test input unchanged": baseline_identity(challenges),
                 "most common training output": baseline_most_common_output(challenges)}
    for name, sub in baselines.items():
        scores = score(sub, solutions)
        del scores["solved"]
        rows.append({"method": name, **scores, "tasks": n_tasks})
    return {"rows": rows, "columns": results, "canvas": canvas, "settings": {"run": run, **own},
            "weights": str(weights), "budget_minutes": minutes, "tasks": list(challenges),
            "seconds_total": round(time.monotonic() - t0, 1),
            "loadavg": {"start": load_start, "end": _loadavg()}, "cpu_count": os.cpu_count()}


def _check_own(own: dict) -> None:
    members = own["ensemble"] or [{}]
    if not isinstance(members, list) or not all(isinstance(m, dict) for m in members):
        raise ValueError(f"ensemble must be a list of setting dicts, e.g. [{{\"train_aug\": 8}}, {{}}], "
                         f"got {members!r}")
    for k, overrides in enumerate(members):
        own_keys = sorted(set(PROOF_SETTINGS) & {key.split(".")[0] for key in overrides})
        if own_keys:
            raise ValueError(f"ensemble member {k}: {own_keys} are settings of the whole proof, not of one model")


def _loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def format_result(result: dict) -> str:
    lines = ["| method | pass@2 | tasks solved | cell accuracy |", "| --- | --- | --- | --- |"]
    lines += [f"| {r['method']} | {r['pass@2']:.2f} | {r['tasks solved']} / {r['tasks']} | {r['cell accuracy']:.3f} |"
              for r in result["rows"]]
    lines.append(f"\nweights {result['weights']}, canvas {result['canvas']}x{result['canvas']}, "
                 f"{len(result['tasks'])} tasks; cell accuracy: the better attempt's fraction of right cells, "
                 f"0 for a wrong shape, averaged over test outputs")
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
    p.add_argument("--budget-minutes", type=float, default=None,
                   help="per trained column: build + train + inference (default: the preset's, 10)")
    p.add_argument("--output-dir", default="runs/proof", help="data, run folder and result.json go here")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a preset key (configs/kaggle/proof.yaml), training key, canvas, ensemble or "
                        "adapt.KEY, e.g. --set train_aug=50 --set lr=1e-3 --set adapt.lr=1e-4")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 is faster when other jobs share the cores)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        from trm_core.data.arc import load_task_file

        challenges, solutions, _ = load_task_file(args.tasks, args.solutions)
        result = run_proof(challenges, solutions, args.output_dir, budget_minutes=args.budget_minutes,
                           settings=args.set, weights=args.weights,
                           compare_scratch=not args.no_scratch, progress=not args.no_progress)
    except (ValueError, RuntimeError, OSError) as e:
        print(f"proof: {e}", file=sys.stderr)
        return 2
    Path(args.output_dir, "result.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(format_result(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
