"""Held-out pass@2 of the shipped CPU trunk: no adaptation, adapted, from scratch, and the two baselines.

    python bench/bench_heldout.py                                    # all eligible held-out tasks, 45 min a column
    python bench/bench_heldout.py --tasks data/heldout/arc1_eval_v1.json --budget-minutes 10   # = trm proof
    # the columns on both cores at once (one thread each), then one table from both files:
    python bench/bench_heldout.py --no-scratch --threads 1 --json bench/results/heldout_trunk.json &
    python bench/bench_heldout.py --weights scratch --threads 1 --json bench/results/heldout_scratch.json \
        --output-dir runs/bench_heldout_scratch

The tasks (data/heldout/arc1_eval_all.json) are every ARC-AGI-1 evaluation task whose grids are all <= 10x10 with
one test input: no step of the trunk's pretraining saw any of them (trm select-tasks' exclusion rule), and the
adaptation sees their demonstrations only. It is `trm proof` with a longer budget, so the figures are not ten coin
flips: one row per method, the tasks each solved, and the time each column took.

JSON rows (bench/results/heldout.json): method, pass@2, tasks_solved, tasks, steps, train_s, eval_s, total_s,
solved (task ids).
"""

from __future__ import annotations

import argparse
import sys

import _common  # noqa: F401  (puts the repo on sys.path)
from _common import REPO, finish, record

from trm_core.data.arc import load_task_file
from trm_core.proof import SHIPPED_TRUNK, format_result, run_proof


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
    args = p.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    rec = record(argv)
    challenges, solutions, _ = load_task_file(args.tasks)
    result = run_proof(challenges, solutions, args.output_dir, budget_minutes=args.budget_minutes,
                       settings=args.set, weights=args.weights, compare_scratch=not args.no_scratch, progress=False)
    print(format_result(result) + "\n")
    columns = {c["method"]: c for c in result["columns"]}
    rows = []
    for r in result["rows"]:
        col = columns.get(r["method"], {})
        sec = col.get("seconds", {})
        rows.append({"method": r["method"], "pass@2": round(r["pass@2"], 4), "tasks_solved": r["tasks solved"],
                     "tasks": r["tasks"], "steps": col.get("steps"), "train_s": sec.get("train"),
                     "eval_s": sec.get("eval"), "total_s": sec.get("total"), "solved": col.get("solved")})
    finish("heldout", rec, rows, ["method", "pass@2", "tasks_solved", "tasks", "steps", "train_s", "eval_s",
                                  "total_s"], args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
