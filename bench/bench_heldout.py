"""Held-out pass@2 of the shipped CPU trunk: no adaptation, adapted, from scratch, and the two baselines.

    python bench/bench_heldout.py                                    # all eligible held-out tasks, 45 min a column
    python bench/bench_heldout.py --tasks data/heldout/arc1_eval_v1.json --budget-minutes 10   # = trm proof
    # the columns on both cores at once (one thread each), then one table from both files:
    python bench/bench_heldout.py --no-scratch --threads 1 --json bench/results/heldout_trunk.json &
    python bench/bench_heldout.py --weights scratch --threads 1 --json bench/results/heldout_scratch.json \
        --output-dir runs/bench_heldout_scratch
    python bench/bench_heldout.py --merge bench/results/heldout_trunk.json bench/results/heldout_scratch.json
    # per task, over one or more runs: is the adapted trunk closer to the truth than scratch? (sign test)
    python bench/bench_heldout.py --paired runs/bench_heldout/trunk_adapted runs/bench_heldout_scratch/scratch \
        --paired runs/bench_s1/trunk_adapted runs/bench_s1_scratch/scratch

The tasks (data/heldout/arc1_eval_all.json) are every ARC-AGI-1 evaluation task whose grids are all <= 10x10 with
one test input: no step of the trunk's pretraining saw any of them (trm select-tasks' exclusion rule), and the
adaptation sees their demonstrations only. It is `trm proof` with a longer budget, so the figures are not ten coin
flips: one row per method, the tasks each solved, and the time each column took.

Some of these tasks were used to choose settings (the tuning lists `data/heldout/arc1_eval_tune*.json`); the
columns `untuned_solved` / `untuned` count only the others, the figure that is held out in every sense.

`--paired A B` (repeatable: one pair of column folders per run, each beside its run's solutions.json of the same
tasks) compares two columns task by task: each task's cell accuracy averaged over the runs, then how many tasks A
has closer to the truth than B, further and equal, and a one-sided sign test (the chance of A being closer on that
many tasks or more if neither column were better), next to the exact solves of each run
(bench/results/heldout_paired.json).

JSON rows (bench/results/heldout.json): method, pass@2, tasks_solved, cell_acc (the better attempt's fraction of
right cells, 0 for a wrong shape, averaged over test outputs), tasks, untuned_solved, untuned, steps,
train_s, eval_s, total_s, solved (task ids).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import _common  # noqa: F401  (puts the repo on sys.path)
from _common import REPO, _repo_relative, finish, markdown_table, record

from trm_core.data.arc import load_task_file
from trm_core.proof import SHIPPED_TRUNK, format_result, run_proof


COLUMNS = ["method", "pass@2", "tasks_solved", "cell_acc", "tasks", "untuned_solved", "untuned", "steps", "train_s",
           "eval_s", "total_s"]


def merge(paths: list[str], json_path: str | None) -> int:
    """One table from several runs' JSON (e.g. the trunk's and the scratch column's, run side by side); a row
    that several files hold (the baselines) is kept once, after the trained columns."""
    results = [json.loads(Path(p).read_text()) for p in paths]
    rows, seen = [], set()
    for r in results:
        for row in r["rows"]:
            if row["method"] not in seen:
                seen.add(row["method"])
                rows.append(row)
    rows.sort(key=lambda row: row.get("steps") is None)  # stable: the baselines (no steps) last
    merged = dict(results[0], rows=rows, merged_from=[str(p) for p in paths],
                  records=[r["record"] for r in results])
    print(markdown_table(rows, COLUMNS))
    out = Path(json_path) if json_path else REPO / "bench" / "results" / "heldout.json"
    out.write_text(json.dumps(merged, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def sign_test(wins: int, losses: int) -> float:
    """One-sided sign test: P(at least `wins` successes of wins + losses fair coin flips); ties are dropped."""
    n = wins + losses
    return sum(math.comb(n, k) for k in range(wins, n + 1)) / 2 ** n if n else 1.0


def paired(pairs: list[list[str]], json_path: str | None, argv: list[str] | None) -> int:
    """Task-by-task cell accuracy of column A against column B over runs (see the module docstring)."""
    from trm_core.submission import cell_accuracy

    rec = record(argv)
    runs, per_a, per_b = [], [], []
    for a, b in pairs:
        sols = [Path(d).parent / "solutions.json" for d in (a, b)]
        if not all(f.is_file() for f in sols) or json.loads(sols[0].read_text()) != json.loads(sols[1].read_text()):
            raise SystemExit(f"--paired {a} {b}: each folder must sit beside its run's solutions.json, the same tasks")
        sol = sols[0]
        run = {"a": _repo_relative(a), "b": _repo_relative(b)}
        for key, d, per in (("a", a, per_a), ("b", b, per_b)):
            sub = Path(d) / "submission.json"
            mean, tasks = cell_accuracy(sub, sol)  # a fraction of 1.0 is an exact answer
            per.append({t: sum(v) / len(v) for t, v in tasks.items()})
            run.update({f"{key}_cell_acc": round(mean, 4),
                        f"{key}_solved": sum(all(f == 1.0 for f in v) for v in tasks.values())})
        runs.append(run)
    tasks = sorted(set.intersection(*(set(p) for p in per_a + per_b)))
    mean_a = {t: sum(p[t] for p in per_a) / len(per_a) for t in tasks}
    mean_b = {t: sum(p[t] for p in per_b) / len(per_b) for t in tasks}
    closer = sum(mean_a[t] > mean_b[t] + 1e-9 for t in tasks)
    further = sum(mean_b[t] > mean_a[t] + 1e-9 for t in tasks)
    row = {"runs": len(pairs), "tasks": len(tasks), "a_closer": closer, "b_closer": further,
           "equal": len(tasks) - closer - further, "sign_test_p": sign_test(closer, further),
           "a_solved": sum(r["a_solved"] for r in runs), "b_solved": sum(r["b_solved"] for r in runs)}
    print("A: " + ", ".join(r["a"] for r in runs) + "\nB: " + ", ".join(r["b"] for r in runs) + "\n")
    print(markdown_table(runs, ["a", "a_solved", "a_cell_acc", "b", "b_solved", "b_cell_acc"]) + "\n")
    finish("heldout_paired", dict(rec, runs=runs), [row], list(row), json_path)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", default=str(REPO / "data" / "heldout" / "arc1_eval_all.json"))
    p.add_argument("--weights", default=str(SHIPPED_TRUNK))
    p.add_argument("--budget-minutes", type=float, default=45.0, help="per trained column")
    p.add_argument("--output-dir", default=str(REPO / "runs" / "bench_heldout"))
    p.add_argument("--no-scratch", action="store_true", help="with a trunk: skip the from-scratch column")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="as trm proof --set")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None, help="output path (default bench/results/heldout.json)")
    p.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                   help="run nothing: one table (and bench/results/heldout.json) from the rows of these results")
    p.add_argument("--paired", nargs=2, action="append", default=None, metavar=("A", "B"),
                   help="run nothing: compare column folders A and B task by task (repeat for more runs)")
    args = p.parse_args(argv)
    if args.paired:
        return paired(args.paired, args.json, argv)
    if args.merge:
        return merge(args.merge, args.json)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    rec = record(argv)
    challenges, solutions, _ = load_task_file(args.tasks)
    result = run_proof(challenges, solutions, args.output_dir, budget_minutes=args.budget_minutes,
                       settings=args.set, weights=args.weights, compare_scratch=not args.no_scratch, progress=False)
    print(format_result(result) + "\n")
    columns = {c["method"]: c for c in result["columns"]}
    tuned = {t for f in sorted((REPO / "data" / "heldout").glob("arc1_eval_tune*.json"))
             for t in json.loads(f.read_text())["task_ids"]}
    untuned = [t for t in challenges if t not in tuned]
    rows = []
    for r in result["rows"]:
        col = columns.get(r["method"], {})
        sec = col.get("seconds", {})
        rows.append({"method": r["method"], "pass@2": round(r["pass@2"], 4), "tasks_solved": r["tasks solved"],
                     "cell_acc": round(r["cell accuracy"], 4), "tasks": r["tasks"],
                     "untuned_solved": None if col.get("solved") is None else len(set(col["solved"]) - tuned),
                     "untuned": len(untuned), "steps": col.get("steps"), "train_s": sec.get("train"),
                     "eval_s": sec.get("eval"), "total_s": sec.get("total"), "solved": col.get("solved")})
    finish("heldout", rec, rows, COLUMNS, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
