"""Run every benchmark and collect one Markdown report + one JSON under bench/results/.

    python bench/run_all.py                     # CPU: a few minutes per bench; GPU rows too when CUDA is present
    python bench/run_all.py --only train inference --threads 1
    python bench/run_all.py --gpu-only          # on a GPU machine: just the bf16 ARC-size rows (planner input)

Each bench runs in its own process (so one's threads, compile caches and memory do not colour the next) and
writes bench/results/<name>.json; this script then writes bench/results/summary.md (every table, with the
hardware line and load of each run) and bench/results/summary.json ({name: that bench's JSON}).
Benches written by other modules' owners (voting, dataset build) are called, not duplicated; one that is missing
or fails is reported in the summary and does not stop the others.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import _common  # noqa: F401
from _common import RESULTS, hardware_line, loadavg, markdown_table

BENCH = Path(__file__).resolve().parent
# name -> (script, extra args); our own benches take --json and print a table from their rows.
BENCHES = {
    "train": ("bench_train.py", []),
    "inference": ("bench_inference.py", []),
    "sizes": ("bench_sizes.py", []),
    "voting": ("bench_voting.py", ["--sizes", "small"]),
    "build_data": ("bench_build_data.py", ["--num-aug", "100"]),  # its default also builds 1000 (~10 GB)
}
OWN_COLUMNS = {
    "train": ["model", "canvas", "device", "dtype", "compiled", "global_batch", "micro_batch", "step_time_s",
              "optimizer_steps_per_hour", "examples_act_steps_per_s", "peak_mem_gb"],
    "inference": ["model", "canvas", "steps", "device", "dtype", "compiled", "batch", "rows_per_s",
                  "seconds_per_1k_rows", "arc2_eval_1000aug_s"],
    "sizes": ["item", "mb", "how", "detail"],
}


def run_bench(name: str, extra: list[str], threads: int | None) -> dict:
    script, args = BENCHES[name]
    path = BENCH / script
    out = RESULTS / f"{name}.json"
    if not path.exists():
        return {"name": name, "status": "missing", "detail": f"{script} not found"}
    cmd = [sys.executable, str(path), *args, *extra, "--json", str(out)]
    if threads and name in OWN_COLUMNS and name != "sizes":
        cmd += ["--threads", str(threads)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    result = {"name": name, "command": " ".join(cmd[1:]), "seconds": round(time.perf_counter() - t0, 1),
              "status": "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})",
              "stdout": proc.stdout, "stderr_tail": proc.stderr[-2000:]}
    if proc.returncode == 0 and out.exists():
        result["json"] = json.loads(out.read_text())
    print(f"{name}: {result['status']} in {result['seconds']} s", file=sys.stderr, flush=True)
    return result


def section(r: dict) -> str:
    lines = [f"## {r['name']}", ""]
    if r["status"] != "ok":
        lines += [f"{r['status']}: {r.get('detail') or r.get('stderr_tail', '')[-500:]}", ""]
        return "\n".join(lines)
    lines += [f"`python bench/{r['command'].split('bench/', 1)[-1]}` ({r['seconds']} s)", ""]
    data = r.get("json")
    if isinstance(data, dict) and data.get("schema", "").startswith("trm_core.bench/") and r["name"] in OWN_COLUMNS:
        lines += [markdown_table(data["rows"], OWN_COLUMNS[r["name"]]), "", hardware_line(data["record"]), ""]
    else:  # a bench with its own output format: keep what it printed
        lines += ["```", r["stdout"].strip(), "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", choices=sorted(BENCHES), default=sorted(BENCHES))
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads for train and inference")
    p.add_argument("--gpu-only", action="store_true",
                   help="train + inference on CUDA only, ARC-size model (bf16, eager and compiled)")
    args = p.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    names = ["train", "inference"] if args.gpu_only else args.only
    gpu_args = ["--devices", "cuda", "--models", "arc"]
    start = loadavg()
    results = [run_bench(n, gpu_args if args.gpu_only else [], args.threads) for n in names]
    report = [f"# trm_core benchmarks ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
              f"load average at start {start}, at end {loadavg()}", ""] + [section(r) for r in results]
    (RESULTS / "summary.md").write_text("\n".join(report))
    (RESULTS / "summary.json").write_text(json.dumps(
        {r["name"]: r.get("json", {"status": r["status"]}) for r in results}, indent=2) + "\n")
    print("\n".join(report))
    print(f"wrote {RESULTS / 'summary.md'} and summary.json", file=sys.stderr)
    return 0 if all(r["status"] in ("ok", "missing") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
