"""Inference throughput at evaluation: augmented test inputs per second (test inputs x augmentations / s).

    python bench/bench_inference.py                                   # CPU fp32: ARC-size at canvas 30 and 12
    python bench/bench_inference.py --models arc --batch 512 --steps 16 --compile both      # one GPU, bf16
    python bench/bench_inference.py --models tiny arc --canvas 12 --steps 1 2 4 --threads 1

Times `trm_core.predict` (what `trm_core.evaluate` runs per batch: `steps` ACT steps from a fresh carry, eval
mode, inference mode) on batches of random token rows. One row is one augmented test input, so rows / s is the
rate at which an evaluation gets through test inputs x augmentations; the time of a whole evaluation is
rows / rate (ARC-AGI-2's public evaluation at 1000 augmentations is ~170k rows). Cost is linear in `steps`
(16 is upstream's fixed evaluation depth; `halt_max_steps_eval` lowers it) and roughly quadratic in the canvas
side's square for attention (canvas 12 = 144 positions vs 900).

JSON rows (bench/results/inference.json, schema in bench/_common.py):
    model, hidden_size, canvas, seq_len, steps, device, device_name, dtype, compiled, batch, batches_timed,
    batch_time_s (median), rows_per_s, row_act_steps_per_s, seconds_per_1k_rows, arc2_eval_1000aug_s
    (170,393 rows at this rate), torch_threads
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import _common  # noqa: F401  (puts the repo on sys.path)
import torch
from _common import cuda_sync, device_plan, finish, record

from trm_core.config import ArchConfig, load_yaml
from trm_core.model import build_model, predict
from trm_core.train import CONFIG_DIR

ARCH_FILES = {"tiny": "trm_tiny", "arc": "trm"}
ARC2_EVAL_ROWS = 170_393  # test rows of ARC-AGI-2's evaluation set at 1000 augmentations (upstream-trm.md 4.6)
COLUMNS = ["model", "canvas", "steps", "device", "dtype", "compiled", "batch", "batch_time_s", "rows_per_s",
           "seconds_per_1k_rows", "arc2_eval_1000aug_s"]
DEFAULT_BATCH = {"cpu": 2, "cuda": 512}


def bench_one(model: str, canvas: int, steps: int, device: str, batch: int, compiled: bool, repeats: int,
              warmup: int, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    arch = load_yaml(CONFIG_DIR / "arch" / f"{ARCH_FILES[model]}.yaml")
    cfg = ArchConfig(**dict(arch, seq_len=canvas * canvas, num_puzzle_identifiers=1024))
    net = build_model(cfg).to(device).eval()
    if compiled:
        net.inner.L_level.compile()  # as the trainer does: in place, names unchanged
    inputs = torch.randint(0, 12, (batch, cfg.seq_len), device=device)
    ids = torch.randint(1, 1024, (batch,), device=device)
    times = []
    for i in range(warmup + repeats):
        cuda_sync()
        t0 = time.perf_counter()
        out = predict(net, inputs, ids, steps)
        out["preds"].cpu()  # what the evaluator does with every batch
        cuda_sync()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    rate = batch / med
    return {
        "model": model, "hidden_size": cfg.hidden_size, "canvas": canvas, "seq_len": cfg.seq_len, "steps": steps,
        "device": device, "device_name": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "dtype": str(net.forward_dtype(torch.device(device))).replace("torch.", ""), "compiled": compiled,
        "batch": batch, "batches_timed": repeats, "batch_time_s": round(med, 4), "rows_per_s": round(rate, 2),
        "row_act_steps_per_s": round(rate * steps, 2), "seconds_per_1k_rows": round(1000 / rate, 2),
        "arc2_eval_1000aug_s": round(ARC2_EVAL_ROWS / rate, 1), "torch_threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["arc"], choices=sorted(ARCH_FILES))
    p.add_argument("--canvas", type=int, nargs="+", default=[30, 12])
    p.add_argument("--steps", type=int, nargs="+", default=None,
                   help="ACT steps per row (default: 16 on CUDA as upstream; 1 on CPU, cost is linear in steps)")
    p.add_argument("--devices", nargs="+", default=["cpu", "cuda"], choices=["cpu", "cuda"])
    p.add_argument("--compile", choices=["off", "on", "both"], default=None,
                   help="torch.compile the recursion (default: both on CUDA, off on CPU)")
    p.add_argument("--batch", type=int, default=None, help="rows per forward (default 2 on CPU, 512 on CUDA)")
    p.add_argument("--repeats", type=int, default=None, help="timed batches (default 2 on CPU, 10 on CUDA)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", default=None, help="output path (default bench/results/inference.json)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rec = record(argv)
    rows = []
    for device, modes in device_plan(args.devices, args.compile):
        for model in args.models:
            for canvas in args.canvas:
                for steps in args.steps or ([16] if device == "cuda" else [1]):
                    for compiled in modes:
                        print(f"{model} canvas {canvas} steps {steps} {device} compiled={compiled} ...",
                              file=sys.stderr, flush=True)
                        rows.append(bench_one(model, canvas, steps, device, args.batch or DEFAULT_BATCH[device],
                                              compiled, args.repeats or (10 if device == "cuda" else 2),
                                              3 if compiled else 1))
    finish("inference", rec, rows, COLUMNS, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
