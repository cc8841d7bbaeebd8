"""Choosing the two attempts: pass@1 / pass@2 / pass@K of every selection rule on the same candidates, and what
each option costs.

    # one proof column (or any `trm kaggle` output folder): its built data, its checkpoints, its solutions
    python bench/bench_selection.py --run runs/proof/scratch
    # several measured sets in one table, with latent-noise and checkpoint-pooling options
    python bench/bench_selection.py --run A --run B --noise-scale 0.3,1.0 --noise-samples 4 --pool 3
    # explicit files instead of a run folder
    python bench/bench_selection.py --checkpoint m.pt --data work/data --solutions solutions.json

For each measured set (a trained model and the tasks it was adapted to) the bench runs the voting inference once
(every augmented test input of the built test split, the final checkpoint), votes, rescores the top K
candidates of every test input under M augmented views (`trm_core.rescore`), then applies every rule
(votes | poe | mean_logprob | votes_then_logprob | hybrid) to the same scored candidates. Options that change
the candidates are measured the same way, each on top of the base inference:
  noise    S extra passes per row with latent noise of scale sigma (PTRM), pooled into the same votes;
  pool     the votes of the run's last N checkpoints pooled (upstream's aggregated voting).

Rows: `set`, `candidates` (base | noise s=.. xS | pool N), `rule`, `K` (candidates re-ranked), `M` (views asked
for: a number or all), `views` (views per test input scored, on average), `pass@1`, `pass@2`, `pass@K` (the best
any rule can do with these K), `pass@all` (the truth is among all the candidates), `extra_s` (seconds on top of
the base inference: rescoring for the likelihood rules, the extra inference passes for noise and pool),
`infer_s` (the base inference), `tasks`, `test_inputs`. The likelihood rules get one row per (K, M) of
--candidates x --views. A summary table (pass@2 and extra seconds per rule, one column per set) is printed first.
A run folder is what `trm_core.proof` writes per column (`<col>/work/{data,runs/adapt/checkpoints}`, solutions
one level up) or `trm kaggle` (`<out>/trm_work/...`, `solutions_listed.json` inside).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import _common  # noqa: F401  (puts the repo on sys.path)
from _common import finish, record

COLUMNS = ["set", "candidates", "rule", "K", "M", "views", "pass@1", "pass@2", "pass@K", "pass@all", "extra_s",
           "infer_s", "tasks", "test_inputs"]
ALL = 10 ** 6  # --views all: every view the voting ran


def resolve_run(run: Path) -> tuple[list[Path], Path, Path]:
    """(checkpoints oldest first, data dir, solutions file) of a proof column or `trm kaggle` output folder."""
    work = next((run / w for w in ("work", "trm_work") if (run / w / "data").is_dir()), None)
    if work is None:
        raise SystemExit(f"{run}: no work/data or trm_work/data folder (a proof column or trm kaggle output?)")
    ckpt_dir = next((work / "runs" / r / "checkpoints" for r in ("adapt", "none")
                     if (work / "runs" / r / "checkpoints").is_dir()), work / "runs" / "adapt" / "checkpoints")
    steps = sorted(int(p.name[5:]) for p in ckpt_dir.glob("step_*") if (p / "model.pt").is_file())
    if not steps:
        raise SystemExit(f"{ckpt_dir}: no checkpoint")
    sols = next((p for p in (work / "solutions_listed.json", run / "solutions.json", run.parent / "solutions.json")
                 if p.is_file()), None)
    if sols is None:
        raise SystemExit(f"{run}: no solutions.json beside or above it (pass --solutions)")
    return [ckpt_dir / f"step_{s}" / "model.pt" for s in steps], work / "data", sols


def measure_set(name: str, checkpoints: list[Path], data: Path, solutions: Path, vote_aug: int | None,
                args) -> list[dict]:
    import numpy as np
    import torch

    from trm_core import load_checkpoint
    from trm_core.data.dataset import PuzzleDataset
    from trm_core.evaluate import run_inference
    from trm_core.rescore import SELECT_RULES, Selection, pass_by_rule, select_attempts
    from trm_core.voting import VoteAccumulator, pass_at_k

    identifiers = json.loads((data / "identifiers.json").read_text())
    test_puzzles = json.loads((data / "test_puzzles.json").read_text())
    test_inputs = {t: [p["input"] for p in task["test"]] for t, task in test_puzzles.items()}
    sols = {t: v for t, v in json.loads(solutions.read_text()).items() if t in test_inputs}
    n_inputs = sum(len(v) for v in test_inputs.values())
    models = [load_checkpoint(c, identifiers_path=data / "identifiers.json", device="cpu",
                              forward_dtype="float32") for c in checkpoints[-max(1, args.pool):]]
    model = models[-1]
    canvas = math.isqrt(model.config.seq_len)
    ds = PuzzleDataset([str(data)], "test", global_batch_size=args.batch_size,
                       max_eval_augmentations=vote_aug)

    def infer(m, **noise):
        t0 = time.perf_counter()
        arrays = run_inference(m, ds, progress=False, **noise)
        return arrays, time.perf_counter() - t0

    def table(label: str, arrays: dict, extra_s: float, infer_s: float) -> list[dict]:
        acc = VoteAccumulator(identifiers, test_inputs, canvas=canvas)
        acc.add(arrays["inputs"], arrays["preds"], arrays["puzzle_identifiers"], arrays["q_halt_logits"])
        ranked = acc.ranked()
        every = pass_at_k(ranked, sols, (10 ** 9,))["overall"][f"pass@{10 ** 9}"]
        common = {"set": name, "candidates": label, "pass@all": round(every, 4), "infer_s": round(infer_s, 2),
                  "tasks": len(sols), "test_inputs": n_inputs}
        k_top = max(args.candidates)
        votes = pass_by_rule(ranked, sols, k_top, ("votes",))["votes"]
        rows = [{**common, "rule": "votes", "K": k_top, "M": 0, **{k: round(v, 4) for k, v in votes.items()},
                 "extra_s": round(extra_s, 2)}]
        for m in args.views:  # one rescoring per M (its cost hardly depends on K): the top K_max scored
            selection = Selection(rule="poe", candidates=k_top, views=m)
            _, scored, info = select_attempts(model, arrays, identifiers, test_inputs, ranked, selection,
                                              batch_size=args.batch_size)
            for k in args.candidates:
                for rule, values in pass_by_rule(scored, sols, k, SELECT_RULES[1:]).items():
                    rows.append({**common, "rule": rule, "K": k, "M": "all" if m == ALL else m,
                                 "views": round(info.get("views_per_test_input", 0), 1),
                                 **{key: round(v, 4) for key, v in values.items()},
                                 "extra_s": round(extra_s + info["rescore_seconds"], 2)})
        return rows

    torch.manual_seed(0)
    base, infer_s = infer(model)
    rows = table("base", base, 0.0, infer_s)
    for scale in args.noise_scale:
        if args.noise_samples <= 0:
            break
        noisy, seconds = infer(model, noise_scale=scale, noise_samples=args.noise_samples, noise_seed=0)
        rows += table(f"noise s={scale:g} x{args.noise_samples}", noisy, max(0.0, seconds - infer_s), infer_s)
    if len(models) > 1:
        parts, seconds = [], 0.0
        for m in models[:-1]:
            arrays, s = infer(m)
            parts.append(arrays)
            seconds += s
        pooled = {k: np.concatenate([p[k] for p in parts] + [base[k]]) for k in base}
        rows += table(f"pool {len(models)}", pooled, seconds, infer_s)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="append", default=[], help="a proof column or trm kaggle output folder")
    p.add_argument("--name", action="append", default=[], help="a label per --run (default: its last two names)")
    p.add_argument("--checkpoint", default=None, help="instead of --run: one checkpoint ...")
    p.add_argument("--data", default=None, help="... its built data folder ...")
    p.add_argument("--solutions", default=None, help="... and the solutions file")
    p.add_argument("--candidates", default="64", help="K: candidates per test input rescored (comma-separated list)")
    p.add_argument("--views", default="all",
                   help="M: augmented views each candidate is scored under (comma-separated list; 'all' = every view)")
    p.add_argument("--vote-aug", type=int, action="append", default=[],
                   help="augmentations that vote (default: all built); one value for every set, or one per set "
                        "in order (the --run sets, then --checkpoint)")
    p.add_argument("--noise-scale", default="", help="comma-separated latent noise scales to measure")
    p.add_argument("--noise-samples", type=int, default=0, help="noisy passes per row for each scale")
    p.add_argument("--pool", type=int, default=1, help="pool the votes of the run's last N checkpoints")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="default bench/results/selection.json")
    args = p.parse_args(argv)
    args.noise_scale = [float(x) for x in args.noise_scale.split(",") if x.strip()]
    args.candidates = [int(x) for x in args.candidates.split(",") if x.strip()]
    args.views = [ALL if x.strip() == "all" else int(x) for x in args.views.split(",") if x.strip()]

    import torch

    torch.set_num_threads(args.threads)
    rec = record(argv)
    sets = []
    for k, run in enumerate(args.run):
        run = Path(run)
        name = args.name[k] if k < len(args.name) else f"{run.parent.name}/{run.name}"
        sets.append((name, *resolve_run(run)))
    if args.checkpoint:
        if not args.data:
            p.error("--checkpoint needs --data (and --solutions unless test_puzzles.json holds the outputs)")
        solutions = Path(args.solutions) if args.solutions else None
        if solutions is None:  # the outputs in test_puzzles.json (tasks with known solutions)
            from trm_core.evaluate import _known_solutions

            known = _known_solutions(json.loads((Path(args.data) / "test_puzzles.json").read_text()))
            if known is None:
                p.error(f"{args.data}/test_puzzles.json has no outputs: pass --solutions")
            import tempfile

            solutions = Path(tempfile.mkdtemp()) / "solutions_from_test_puzzles.json"
            solutions.write_text(json.dumps(known))
        label = args.name[len(args.run)] if len(args.name) > len(args.run) else Path(args.checkpoint).parent.name
        sets.append((label, [Path(args.checkpoint)], Path(args.data), solutions))
    if not sets:
        p.error("give --run (repeatable) or --checkpoint/--data/--solutions")
    if len(args.vote_aug) not in (0, 1, len(sets)):
        p.error(f"--vote-aug: give one value or one per set ({len(sets)})")
    augs = args.vote_aug * len(sets) if len(args.vote_aug) == 1 else (args.vote_aug or [None] * len(sets))
    rows = []
    for (name, checkpoints, data, solutions), vote_aug in zip(sets, augs):
        rows += measure_set(name, checkpoints, data, solutions, vote_aug, args)
    rec["settings"] = {"candidates": args.candidates, "views": args.views, "vote_aug": args.vote_aug,
                       "noise_scale": args.noise_scale, "noise_samples": args.noise_samples, "pool": args.pool}
    print(pivot(rows) + "\n")
    finish("selection", rec, rows, COLUMNS, args.json)
    return 0


def pivot(rows: list[dict]) -> str:
    """The summary: one line per (candidates, rule, K, M), one column per set: pass@2 (extra seconds)."""
    sets = list(dict.fromkeys(r["set"] for r in rows))
    lines = {}
    for r in rows:
        key = (r["candidates"], r["rule"], r["K"] if r["rule"] != "votes" else "", r["M"] if r["rule"] != "votes"
               else "")
        lines.setdefault(key, {})[r["set"]] = f"{r['pass@2']:.3f} ({r['extra_s']:.0f} s)"
    out = ["| candidates | rule | K | M | " + " | ".join(sets) + " |", "| --- | --- | --- | --- |"
           + " --- |" * len(sets)]
    for (cands, rule, k, m), by_set in lines.items():
        out.append(f"| {cands} | {rule} | {k} | {m} | " + " | ".join(by_set.get(x, "") for x in sets) + " |")
    pass_all = {r["set"]: r["pass@all"] for r in rows if r["candidates"] == "base"}
    out.append("| base | (truth among any candidate: pass@all) | | | "
               + " | ".join(f"{pass_all.get(x, 0):.3f}" for x in sets) + " |")
    return "pass@2 by selection rule (extra seconds over the base inference):\n\n" + "\n".join(out)


if __name__ == "__main__":
    raise SystemExit(main())
