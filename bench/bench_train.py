"""Training throughput of the real trainer step: examples x ACT steps per second and optimizer steps per second.

    python bench/bench_train.py                                  # CPU fp32: tiny (canvas 30 and 12) + ARC-size
    python bench/bench_train.py --models arc --global-batch 384 --micro-batch 96 --compile both   # one GPU, bf16
    python bench/bench_train.py --models tiny --canvas 12 --threads 1 --steps 5

Each configuration builds a fresh model from `configs/arch/<model>.yaml` and times `Trainer.train_step` on
synthetic batches (random grids of random sizes on the canvas, EOS-framed like the builder's): the forward of
every micro-batch, its backward, the gradient all-reduce (a no-op here), AdamATan2 and the sparse sign-SGD
puzzle-embedding update. One optimizer step advances every row of the global batch by one ACT step, so
examples x ACT steps / s = global batch x optimizer steps / s. The first `--warmup` steps (compilation, allocator)
are not timed; the median of the timed steps is reported.

The puzzle table has `--num-ids` rows (default 4096), not ARC-AGI-2's 1,191,730: the sparse update touches only
the batch's rows, so the step time does not depend on the table size (its memory does: 2.4 GB fp32 at 512 wide).
bf16 runs only on CUDA (fp32 on CPU: bf16 matmuls are ~9x slower there); GPU rows are skipped without a GPU.

JSON rows (bench/results/train.json, schema in bench/_common.py), one per configuration:
    model, hidden_size, L_cycles, H_cycles, params, canvas, seq_len, device, device_name, dtype, compiled,
    global_batch, micro_batch, n_micro, steps_timed, step_time_s (median), step_time_min_s,
    optimizer_steps_per_s, optimizer_steps_per_hour, examples_act_steps_per_s, peak_mem_gb (CUDA only),
    torch_threads
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from types import SimpleNamespace

import _common  # noqa: F401  (puts the repo on sys.path)
import numpy as np
import torch
from _common import cuda_sync, device_plan, finish, record

from trm_core import dist as trm_dist
from trm_core.config import load_yaml
from trm_core.data.augment import grid_to_tokens
from trm_core.train import CONFIG_DIR, TrainConfig, Trainer

COLUMNS = ["model", "canvas", "device", "dtype", "compiled", "global_batch", "micro_batch", "step_time_s",
           "optimizer_steps_per_s", "optimizer_steps_per_hour", "examples_act_steps_per_s", "peak_mem_gb"]
# (global batch, micro batch, timed steps) per device when not given on the command line. The CPU ARC-size
# default is tiny on purpose (~20-40 s per step on one loaded core): it measures the rate, not a useful batch.
DEFAULTS = {("tiny", "cpu"): (16, 8, 3), ("arc", "cpu"): (2, 1, 2),
            ("tiny", "cuda"): (768, 768, 10), ("arc", "cuda"): (384, 96, 10)}
ARCH_FILES = {"tiny": "trm_tiny", "arc": "trm"}


def synthetic_batch(n: int, canvas: int, num_ids: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """n random (input, output) grid pairs of random sizes, encoded as the builder does (labels PAD -> -100)."""
    inputs, labels = [], []
    for _ in range(n):
        h, w = rng.integers(1, canvas, size=2)  # leave room for the EOS row/column
        inputs.append(grid_to_tokens(rng.integers(0, 10, size=(h, w)), canvas))
        h, w = rng.integers(1, canvas, size=2)
        labels.append(grid_to_tokens(rng.integers(0, 10, size=(h, w)), canvas))
    lab = torch.from_numpy(np.stack(labels).astype(np.int64))
    lab[lab == 0] = -100
    return {"inputs": torch.from_numpy(np.stack(inputs).astype(np.int32)), "labels": lab,
            "puzzle_identifiers": torch.from_numpy(rng.integers(1, num_ids, size=n).astype(np.int32))}


def make_trainer(model: str, canvas: int, device: str, global_batch: int, micro: int, compiled: bool,
                 num_ids: int) -> Trainer:
    """A Trainer whose model and optimizers are set up as in a real run, without a dataset on disk."""
    arch = load_yaml(CONFIG_DIR / "arch" / f"{ARCH_FILES[model]}.yaml")
    cfg = TrainConfig(arch=arch, global_batch_size=global_batch, micro_batch_size=micro, compile=compiled,
                      lr=1e-4, lr_warmup_steps=1, progress=False, device=device)
    info = trm_dist.DistInfo(device=torch.device(device))
    trainer = Trainer(cfg, info)
    trainer.setup_without_data(SimpleNamespace(seq_len=canvas * canvas, vocab_size=12, num_puzzle_identifiers=num_ids,
                                               canvas_size=canvas))
    return trainer


def bench_one(model: str, canvas: int, device: str, global_batch: int, micro: int, compiled: bool, steps: int,
              warmup: int, num_ids: int, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    trainer = make_trainer(model, canvas, device, global_batch, micro, compiled, num_ids)
    rng = np.random.default_rng(seed)
    batches = [synthetic_batch(global_batch, canvas, num_ids, rng) for _ in range(2)]
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(warmup + steps):
        cuda_sync()
        t0 = time.perf_counter()
        trainer.train_step(batches[i % 2])  # returns host floats, so the step has finished when it returns
        cuda_sync()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    cfg = trainer.model.config
    return {
        "model": model, "hidden_size": cfg.hidden_size, "L_cycles": cfg.L_cycles, "H_cycles": cfg.H_cycles,
        "params": sum(p.numel() for p in trainer.model.parameters()), "canvas": canvas, "seq_len": cfg.seq_len,
        "device": device, "device_name": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "dtype": str(trainer.model.forward_dtype(torch.device(device))).replace("torch.", ""),
        "compiled": compiled, "global_batch": global_batch, "micro_batch": micro, "n_micro": global_batch // micro,
        "steps_timed": steps, "step_time_s": round(med, 4), "step_time_min_s": round(min(times), 4),
        "optimizer_steps_per_s": round(1 / med, 4), "optimizer_steps_per_hour": round(3600 / med, 1),
        "examples_act_steps_per_s": round(global_batch / med, 2),
        "peak_mem_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None,
        "torch_threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["tiny", "arc"], choices=sorted(ARCH_FILES))
    p.add_argument("--canvas", type=int, nargs="+", default=None,
                   help="canvas sides (default: 30 and 12 for tiny, 30 for arc)")
    p.add_argument("--devices", nargs="+", default=["cpu", "cuda"], choices=["cpu", "cuda"])
    p.add_argument("--compile", choices=["off", "on", "both"], default=None,
                   help="torch.compile the recursion (default: both on CUDA, off on CPU)")
    p.add_argument("--global-batch", type=int, default=None)
    p.add_argument("--micro-batch", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="timed optimizer steps")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 1 eager, 3 compiled)")
    p.add_argument("--num-ids", type=int, default=4096, help="puzzle table rows (time does not depend on it)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", default=None, help="output path (default bench/results/train.json)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rec = record(argv)
    rows = []
    for device, modes in device_plan(args.devices, args.compile):
        for model in args.models:
            canvases = args.canvas or ([30, 12] if model == "tiny" else [30])
            g, m, s = DEFAULTS[(model, device)]
            g, s = args.global_batch or g, args.steps or s
            m = args.micro_batch or min(m, g)
            for canvas in canvases:
                for compiled in modes:
                    warmup = args.warmup if args.warmup is not None else (3 if compiled else 1)
                    print(f"{model} canvas {canvas} {device} compiled={compiled} batch {g}/{m} ...", file=sys.stderr,
                          flush=True)
                    rows.append(bench_one(model, canvas, device, g, m, compiled, s, warmup, args.num_ids))
    finish("train", rec, rows, COLUMNS, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
