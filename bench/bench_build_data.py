"""Benchmark the dataset builder on ARC-AGI-2: wall time, peak RSS, rows and bytes written.

    python bench/bench_build_data.py                      # --num-aug 100 and 1000 (~10 GB written, then deleted)
    python bench/bench_build_data.py --num-aug 100 --json bench/build_data.json

Each build runs `python -m trm_core.data.build` as a child process (training2 evaluation2 concept, test set
evaluation2, the README's ARC-AGI-2 command) into a temporary folder that is deleted afterwards. CPU s (user +
system) is the better speed figure on a shared machine. Peak RSS is the child's ru_maxrss from `os.wait4`
(what `/usr/bin/time -v` reports as "Maximum resident set size").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_build(num_aug: int, work_dir: Path, prefix: str) -> dict:
    """One build in a fresh child process; returns its measurements."""
    out = work_dir / f"arc2-aug-{num_aug}"
    cmd = [sys.executable, "-m", "trm_core.data.build", "--input-file-prefix", prefix,
           "--subsets", "training2", "evaluation2", "concept", "--test-set-name", "evaluation2",
           "--num-aug", str(num_aug), "--output-dir", str(out), "--no-progress"]
    start = time.monotonic()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, cwd=REPO,
                                env=os.environ | {"OMP_NUM_THREADS": "1"})
        stdout = proc.stdout.read().decode()
        # wait4 gives this child's own rusage; ru_maxrss is its peak RSS in KiB (= /usr/bin/time -v's figure).
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - start
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            raise RuntimeError(f"build failed: {err.read().decode()[-2000:]}")
    summary = json.loads(stdout.strip().splitlines()[-1])
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return {"num_aug": num_aug, "wall_s": round(wall, 1),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "train_rows": summary["train"]["examples"], "test_rows": summary["test"]["examples"],
            "puzzle_identifiers": summary["num_puzzle_identifiers"], "output_gb": round(size / 1e9, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-aug", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--input-file-prefix", default=str(REPO / "data" / "arc" / "arc-agi"))
    parser.add_argument("--work-dir", type=Path, default=None, help="where the temporary outputs go (default: "
                        "the system temp dir); needs ~10 GB free for --num-aug 1000")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    results = []
    for n in args.num_aug:
        with tempfile.TemporaryDirectory(dir=args.work_dir, prefix="bench_build_data_") as tmp:
            results.append(run_build(n, Path(tmp), args.input_file_prefix))
    print(f"ARC-AGI-2 build (training2 evaluation2 concept, test set evaluation2) on {platform.node()}, "
          f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}\n")
    print("| num_aug | wall s | CPU s | peak RSS MB | train rows | test rows | output GB |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(f"| {r['num_aug']} | {r['wall_s']} | {r['cpu_s']} | {r['peak_rss_mb']} | {r['train_rows']:,} "
              f"| {r['test_rows']:,} | {r['output_gb']} |")
    if args.json:
        args.json.write_text(json.dumps({"cpus": os.cpu_count(), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
