"""Shared by every bench script: the run record (hardware, versions, git commit, load), tables and JSON output.

Every bench writes one JSON file with this schema (version 1), which `trm plan` and `bench/run_all.py` read:

    {
      "schema": "trm_core.bench/1",
      "bench": "train" | "inference" | "sizes" | ...,
      "record": {"time_utc", "command", "git_commit", "git_dirty", "python", "torch", "numpy", "platform",
                 "cpu_model", "cpu_count", "torch_threads", "loadavg_start", "loadavg_end",
                 "cuda_available", "gpu_name", "gpu_count", "cuda_version"},
      "rows": [ {...one measurement: field names documented in each bench's module docstring...} ]
    }

`loadavg_*` is `os.getloadavg()` (1, 5, 15 min) at the start and end of the run: on a shared machine a number
measured at load 6 on 2 cores is not comparable to one measured idle, so keep them next to each other.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
SCHEMA = "trm_core.bench/1"

if str(REPO) not in sys.path:  # `python bench/x.py` from a checkout, without installing the package
    sys.path.insert(0, str(REPO))


def _git(*args: str) -> str:
    try:
        proc = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, cwd=REPO, check=False)
        return proc.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _repo_relative(arg: str) -> str:
    """An argument that is a path inside the repo, as a repo-relative path (results travel between machines)."""
    try:
        return Path(arg).resolve().relative_to(REPO).as_posix() if Path(arg).is_absolute() else arg
    except ValueError:
        return arg


def record(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Hardware, versions, git commit and load at the start of a bench run."""
    import numpy as np
    import torch

    cuda = torch.cuda.is_available()
    return {
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join([Path(sys.argv[0]).name] + [_repo_relative(a) for a in
                                                        (sys.argv[1:] if argv is None else argv)]),
        "git_commit": _git("rev-parse", "HEAD") or "unknown",
        "git_dirty": bool(_git("status", "--porcelain")),
        "python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__,
        "platform": platform.platform(), "cpu_model": _cpu_model(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "loadavg_start": loadavg(),
        "cuda_available": cuda,
        "gpu_name": torch.cuda.get_device_name(0) if cuda else None,
        "gpu_count": torch.cuda.device_count() if cuda else 0,
        "cuda_version": torch.version.cuda if cuda else None,
    }


def hardware_line(rec: dict[str, Any]) -> str:
    dev = f"{rec['gpu_name']} (CUDA {rec['cuda_version']})" if rec["cuda_available"] else "no GPU"
    return (f"{rec['cpu_model']}, {rec['cpu_count']} CPUs ({rec['torch_threads']} torch threads), {dev}; "
            f"torch {rec['torch']}, python {rec['python']}; git {rec['git_commit'][:10]}"
            f"{' (dirty)' if rec['git_dirty'] else ''}; load {rec['loadavg_start']} -> {rec.get('loadavg_end')}")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v == 0 or 0.01 <= abs(v) < 1e5:
            return f"{v:.3g}" if abs(v) < 100 else f"{v:,.0f}"
        return f"{v:.3g}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return "" if v is None else str(v)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A Markdown table of `columns` (missing values blank)."""
    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def finish(bench: str, rec: dict[str, Any], rows: list[dict[str, Any]], columns: Sequence[str],
           json_path: str | Path | None) -> dict[str, Any]:
    """Print the table and the hardware line, write the JSON (default bench/results/<bench>.json)."""
    rec = dict(rec, loadavg_end=loadavg())
    result = {"schema": SCHEMA, "bench": bench, "record": rec, "rows": rows}
    print(markdown_table(rows, columns))
    print(f"\n{hardware_line(rec)}")
    path = Path(json_path) if json_path else RESULTS / f"{bench}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return result


def cuda_sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def device_plan(devices: Sequence[str], compile_mode: str | None) -> list[tuple[str, list[bool]]]:
    """(device, compile settings to time) for each requested device; CUDA is skipped, with a message, without a GPU.

    `compile_mode` off | on | both; None = both on CUDA (compiled is the default there), off on CPU.
    """
    import torch

    plan = []
    for device in devices:
        if device == "cuda" and not torch.cuda.is_available():
            print("no CUDA device: skipping the GPU (bf16) rows", file=sys.stderr)
            continue
        mode = compile_mode or ("both" if device == "cuda" else "off")
        plan.append((device, {"off": [False], "on": [True], "both": [False, True]}[mode]))
    return plan
