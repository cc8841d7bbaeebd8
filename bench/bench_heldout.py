"""Held-out pass@2 of the shipped CPU trunk: no adaptation, adapted, from scratch, and the two baselines.

    python bench/bench_heldout.py                                    # all eligible held-out tasks, 45 min a column
    python bench/bench_heldout.py --tasks data/heldout/arc1_eval_v1.json --budget-minutes 10   # = trm proof
    # the columns on both cores at once (one thread each), then one table from both files:
    python bench/bench_heldout.py --no-scratch --threads 1 --json bench/results/heldout_trunk.json &
    python bench/bench_heldout.py --weights scratch --threads 1 --json bench/results/heldout_scratch.json \
        --output-dir runs/bench_heldout_scratch
    python bench/bench_heldout.py --merge bench/results/heldout_trunk.json bench/results/heldout_scratch.json

The tasks (data/heldout/arc1_eval_all.json) are every ARC-AGI-1 evaluation task whose grids are all <= 10x10 with
one test input: no step of the trunk's pretraining saw any of them (trm select-tasks' exclusion rule), and the
adaptation sees their demonstrations only. It is `trm proof` with a longer budget, so the figures are not ten coin
flips: one row per method, the tasks each solved, and the time each column took.

Some of these tasks were used to choose settings (the tuning lists `data/heldout/arc1_eval_tune*.json`); the
columns `untuned_solved` / `untuned` count only the others, the figure that is held out in every sense.

JSON rows (bench/results/heldout.json): method, pass@2, tasks_solved, cell_acc (the better attempt's fraction of
right cells, 0 for a wrong shape, averaged over test outputs), tasks, untuned_solved, untuned, steps,
train_s, eval_s, total_s, solved (task ids).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import _common  # noqa: F401  (puts the repo on sys.path)
from _common import REPO, finish, markdown_table, record

from trm_core.data.arc import load_task_file
from trm_core.proof import SHIPPED_TRUNK, format_result, run_proof


COLUMNS = ["method", "pass@2", "tasks_solved", "cell_acc", "tasks", "untuned_solved", "untuned", "steps", "train_s", "eval_s",
           "total_s"]


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
    args = p.parse_args(argv)
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
