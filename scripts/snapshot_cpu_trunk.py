"""Ship a snapshot of the CPU pretraining run: export its latest checkpoint as the package's trunk and keep its
metrics and learning curves in the repo.

    python scripts/snapshot_cpu_trunk.py runs/cpu_pretrain              # latest checkpoint
    python scripts/snapshot_cpu_trunk.py runs/cpu_pretrain --step 4000
    python scripts/snapshot_cpu_trunk.py runs/cpu_pretrain --measure-only   # re-measure the shipped trunk only
    python scripts/snapshot_cpu_trunk.py runs/cpu_pretrain_s2 --previous runs/cpu_pretrain:6500   # two stages
    python scripts/snapshot_cpu_trunk.py runs/cpu_pretrain_s2 --step 17000 --previous runs/cpu_pretrain:6500 \
        --trunk-dir runs/candidate_17000 --results-dir bench/results/cpu_pretrain_s17000   # a candidate, not shipped

Writes trm_core/trunks/cpu_c12_h64/{model.pt,config.yaml,README.md} (`trm_core.checkpoint.export_trunk`, the code
behind `trm export`), bench/results/cpu_pretrain/{metrics.jsonl.gz,learning_curves.png,summary.json}, and prints
the summary the model card quotes: steps, examples seen, hours of training (the sum of the logged intervals, so
pauses between resumed sessions do not count), the last evaluation on the pool's held-back test inputs, and the
unadapted trunk's token accuracy on the held-out tasks' demonstrations next to copying the input and untrained.
With `--previous RUN:STEP` (the run and checkpoint a `load_checkpoint=` stage started from) that stage's metrics are
kept too (each record tagged with its stage) and the summary adds both stages up.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRUNK = REPO / "trm_core" / "trunks" / "cpu_c12_h64"
RESULTS = REPO / "bench" / "results" / "cpu_pretrain"
MAX_GAP_S = 120.0  # a longer gap between two logged lines is a pause (the run was stopped and resumed)


def summarize(records: list[dict], step: int, batch: int) -> dict:
    train = [r for r in records if "train/lm_loss" in r and r["step"] <= step]
    times = [r["time"] for r in train]
    seconds = sum(b - a for a, b in zip(times, times[1:]) if 0 < b - a < MAX_GAP_S)
    evals = [r for r in records if "ARC/pass@2" in r and r["step"] <= step]
    last = train[-50:]
    return {"step": step, "examples": step * batch, "train_hours": round(seconds / 3600, 2),
            "sessions": 1 + sum(1 for a, b in zip(times, times[1:]) if b - a >= MAX_GAP_S),
            "last_50_logged": {k: round(sum(r[k] for r in last) / len(last), 4)
                               for k in ("train/lm_loss", "train/accuracy", "train/exact_accuracy")} if last else {},
            "last_eval": {k: v for k, v in evals[-1].items() if k.startswith("ARC/") or k == "step"} if evals else {}}


def heldout_token_accuracy(trunk: Path) -> dict:
    """Token accuracy on the demonstrations of every eligible held-out task (data/heldout/arc1_eval_all.json) of
    the unadapted trunk (mean puzzle embedding), of copying the input, and of the same model untrained."""
    import numpy as np
    import torch

    from trm_core.checkpoint import load_checkpoint
    from trm_core.data.arc import load_task_file
    from trm_core.data.augment import grid_to_tokens
    from trm_core.model import build_model, predict

    challenges, _, _ = load_task_file(REPO / "data" / "heldout" / "arc1_eval_all.json")
    model = load_checkpoint(trunk, num_puzzle_identifiers=1)
    canvas = int(model.config.seq_len ** 0.5)
    pairs = [(p["input"], p["output"]) for task in challenges.values() for p in task["train"]]
    inputs, labels = (torch.tensor(np.stack([grid_to_tokens(np.array(g, dtype=np.uint8), canvas) for g in grids]))
                      for grids in zip(*pairs))
    ids = torch.zeros(len(inputs), dtype=torch.int32)
    mask = labels != 0

    def acc(preds: torch.Tensor) -> float:
        return round((((preds == labels) & mask).sum() / mask.sum()).item(), 4)

    torch.manual_seed(0)
    return {"trunk": acc(predict(model, inputs, ids)["preds"]), "copy_input": acc(inputs),
            "untrained": acc(predict(build_model(model.config), inputs, ids)["preds"])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    p.add_argument("--previous", default=None, metavar="RUN:STEP",
                   help="the earlier stage this run started from (load_checkpoint=RUN/checkpoints/step_STEP)")
    p.add_argument("--trunk-dir", type=Path, default=TRUNK,
                   help="export here instead of the shipped trunk (a candidate that is measured, not shipped)")
    p.add_argument("--results-dir", type=Path, default=RESULTS, help="metrics, curves and summary.json here")
    p.add_argument("--skip-heldout", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--measure-only", action="store_true",
                   help="export nothing: measure the shipped trunk and add the figures to summary.json")
    args = p.parse_args(argv)
    sys.path.insert(0, str(REPO))
    import yaml

    from trm_core.checkpoint import export_trunk

    trunk_dir, results = args.trunk_dir, args.results_dir
    if args.measure_only:
        path = results / "summary.json"
        summary = dict(json.loads(path.read_text()), heldout_demo_token_accuracy=heldout_token_accuracy(trunk_dir))
        path.write_text(json.dumps(summary, indent=1) + "\n")
        print(json.dumps(summary["heldout_demo_token_accuracy"]))
        return 0
    if args.previous:  # checked before anything is written
        prev, _, prev_step = args.previous.rpartition(":")
        if not prev or not prev_step.isdigit() or not (Path(prev) / "metrics.jsonl").is_file():
            print(f"--previous: expected RUN:STEP with RUN/metrics.jsonl, got {args.previous!r}", file=sys.stderr)
            return 2
        previous, previous_step = Path(prev), int(prev_step)
    ckpts = sorted((args.run_dir / "checkpoints").glob("step_*"), key=lambda d: int(d.name.split("_")[1]))
    if args.step is not None:
        ckpts = [c for c in ckpts if c.name == f"step_{args.step}"]
    if not ckpts:
        print(f"no checkpoint{'' if args.step is None else f' step_{args.step}'} in {args.run_dir}/checkpoints",
              file=sys.stderr)
        return 2
    ckpt = ckpts[-1]
    step = int(ckpt.name.split("_")[1])
    export_trunk(ckpt, trunk_dir)
    results.mkdir(parents=True, exist_ok=True)
    stages = [(previous, previous_step), (args.run_dir, step)] if args.previous else [(args.run_dir, step)]
    kept, parts = [], []
    for n, (run, last) in enumerate(stages, 1):
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
        records = [r for r in records if r["step"] <= last]
        tag = {"stage": n} if len(stages) > 1 else {}
        kept += [dict(r, **tag) for r in records]
        batch = yaml.safe_load((run / "config.yaml").read_text())["global_batch_size"]
        parts.append(dict(summarize(records, last, batch), run=run.name))
        name = "learning_curves.png" if n == len(stages) else f"learning_curves_stage{n}.png"
        if (run / "learning_curves.png").is_file():
            shutil.copy(run / "learning_curves.png", results / name)
    with gzip.open(results / "metrics.jsonl.gz", "wt") as f:
        f.write("\n".join(json.dumps(r) for r in kept) + "\n")
    summary = dict(parts[-1], checkpoint=str(ckpt.relative_to(args.run_dir)))
    if len(parts) > 1:
        summary.update(stages=parts, total_steps=sum(p["step"] for p in parts),
                       total_examples=sum(p["examples"] for p in parts),
                       total_train_hours=round(sum(p["train_hours"] for p in parts), 2))
    if not args.skip_heldout:
        summary["heldout_demo_token_accuracy"] = heldout_token_accuracy(trunk_dir)
    (results / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
