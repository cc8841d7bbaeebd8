#!/usr/bin/env python
"""Run the submission notebook through papermill over a grid of parameter sets and tabulate the results.

    .venv/bin/python scripts/batch_eval.py kaggle_notebooks/batch_grid.example.yaml --out runs/batch
    .venv/bin/python scripts/batch_eval.py GRID.yaml --out runs/batch --dry-run     # list the runs only

GRID.yaml holds `notebook` (default kaggle_notebooks/trm_submission.ipynb), `base` (parameters for every run)
and `grid` (parameter -> list of values; every combination is one run), e.g. modes x weights x task files.
Each run executes the notebook with `output_dir = OUT/<run name>` and is kept as `OUT/<run name>/notebook.ipynb`,
the record of that run (papermill saves it even when a cell fails). Score (when `solutions_file` is set), status,
seconds per phase and the parameters of every run are collected into OUT/results.csv and OUT/results.md.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import re
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
DEFAULT_NOTEBOOK = REPO / "kaggle_notebooks" / "trm_submission.ipynb"


def expand_grid(base: dict, grid: dict) -> list[dict]:
    """Every combination of the grid's values, each merged over `base` (grid keys in file order)."""
    keys = list(grid)
    for k in keys:
        if not isinstance(grid[k], list) or not grid[k]:
            raise ValueError(f"grid.{k}: expected a non-empty list of values, got {grid[k]!r}")
    return [dict(base, **dict(zip(keys, values))) for values in itertools.product(*(grid[k] for k in keys))]


def run_name(index: int, params: dict, grid_keys: list[str]) -> str:
    """`003-mode_full-weights_x`: the index plus the grid values, safe as a folder name."""
    parts = [f"{k}_{Path(str(params[k])).name}" for k in grid_keys]
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", "-".join([f"{index:03d}", *parts]))[:120]


def read_summary(output_dir: Path) -> dict:
    """Status, score and seconds per phase from a run's kaggle_log.jsonl (the runner's final 'run end' line)."""
    log = output_dir / "kaggle_log.jsonl"
    if not log.is_file():
        return {"status": "no log"}
    end = {}
    for line in log.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("phase") == "run" and rec.get("event") == "end":
            end = rec
    if not end:
        return {"status": "killed or crashed"}
    row = {"status": end["status"], "score": end.get("score"), "seconds": end.get("seconds")}
    row.update({f"{k}_s": v for k, v in (end.get("phases") or {}).items()})
    return row


def write_tables(rows: list[dict], out: Path) -> tuple[Path, Path]:
    """results.csv and results.md with the union of every row's columns (first-seen order)."""
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    (out / "results.csv").write_text(buf.getvalue())

    def cell(v) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return "" if v is None else str(v).replace("|", "\\|")

    md = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    md += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    (out / "results.md").write_text("\n".join(md) + "\n")
    return out / "results.csv", out / "results.md"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("grid", type=Path, help="YAML with notebook, base and grid")
    p.add_argument("--out", type=Path, required=True, help="one folder per run, plus results.csv / results.md")
    p.add_argument("--kernel", default=None, help="Jupyter kernel name (default: the notebook's)")
    p.add_argument("--timeout", type=int, default=None, help="papermill per-cell execution timeout (s)")
    p.add_argument("--dry-run", action="store_true", help="print the runs and their parameters, run nothing")
    args = p.parse_args(argv)

    spec = yaml.safe_load(args.grid.read_text()) or {}
    unknown = set(spec) - {"notebook", "base", "grid"}
    if unknown:
        p.error(f"{args.grid}: unknown key(s) {sorted(unknown)}; expected notebook, base, grid")
    notebook = Path(spec.get("notebook") or DEFAULT_NOTEBOOK)
    if not notebook.is_absolute():
        notebook = (REPO / notebook) if not notebook.exists() else notebook
    grid = spec.get("grid") or {}
    runs = expand_grid(spec.get("base") or {}, grid)
    if args.dry_run:
        for i, params in enumerate(runs):
            print(run_name(i, params, list(grid)), json.dumps(params))
        return 0

    import papermill

    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, params in enumerate(runs):
        name = run_name(i, params, list(grid))
        run_dir = args.out / name
        run_dir.mkdir(parents=True, exist_ok=True)
        params = dict(params, output_dir=str(run_dir.resolve()))
        params.setdefault("work_dir", str((run_dir / "trm_work").resolve()))
        t0 = time.monotonic()
        error = ""
        try:
            papermill.execute_notebook(str(notebook), str(run_dir / "notebook.ipynb"), parameters=params,
                                       kernel_name=args.kernel, progress_bar=False, execution_timeout=args.timeout,
                                       cwd=str(REPO))
        except Exception as e:  # noqa: BLE001 - the executed notebook keeps the traceback; go on with the grid
            error = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:200]
        row = {"run": name, **read_summary(run_dir), "notebook_seconds": round(time.monotonic() - t0, 1),
               "error": error, **{k: v for k, v in params.items() if k not in ("output_dir", "work_dir")}}
        rows.append(row)
        print(f"[{i + 1}/{len(runs)}] {name}: {row['status']} score={row.get('score')} "
              f"{row['notebook_seconds']} s {error}", flush=True)
        write_tables(rows, args.out)  # after every run: a long grid that dies still leaves its table
    csv_path, md_path = write_tables(rows, args.out)
    print(f"wrote {csv_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
