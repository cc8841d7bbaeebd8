"""Inference over augmented test inputs and a whole evaluation run (`trm eval`).

    trm eval --checkpoint runs/arc2/step_5000.pt --data data/built/arc2concept-aug-1000 --output-dir runs/arc2_eval
    torchrun --nproc-per-node 4 -m trm_core.cli eval --checkpoint ... --data ... --output-dir ...

Flow (upstream `evaluators/arc.py`, with its known problems fixed: dropped test inputs, unbounded vote pooling,
a required process group, a per-row sha256 loop):
1. `run_inference`: every augmented test row through `halt_max_steps_eval` ACT steps (inference mode; the
   model's forward dtype: bf16 on GPU, fp32 on CPU), rows split over ranks by the dataset, gathered to rank 0.
   No process group is needed at world size 1.
2. voting and pass@K: `trm_core.voting` (`VoteAccumulator`, `pass_at_k`).
3. the submission: `trm_core.submission` (`make_submission`, `write_submission`, `validate_submission`,
   `score_submission`; `trm score`, `trm validate`).
`run_eval` / `evaluate_model` chain the three and write submission.json, metrics.json, per_task.csv and
predictions.json. The names that moved to `trm_core.voting` and `trm_core.submission` are re-exported here.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

# Re-exported (listed in __all__): the names that moved to trm_core.voting, trm_core.submission and
# trm_core.data.augment stay importable from here.
from trm_core.data.augment import parse_aug_names
from trm_core.jsonio import InputError, read_json
from trm_core.submission import (FALLBACKS, _test_inputs_of, kaggle_score, main_score, main_validate, make_submission,
                                 read_challenges, read_solutions, score_submission, validate_submission,
                                 write_submission)
from trm_core.utils import Progress, atomic_write, atomic_write_text, prepare_output_dir
from trm_core.voting import (MAX_SIDE, PASS_KS, RANK_RULES, Candidate, Ranked, TestInputs, VoteAccumulator,
                             VotePool, pass_at_k, truth_ranks, vote)

__all__ = ["FALLBACKS", "MAX_SIDE", "PASS_KS", "RANK_RULES", "Candidate", "Ranked", "TestInputs",
           "VoteAccumulator", "VotePool", "evaluate_model", "infer_in_rounds", "kaggle_score", "loss_head_metrics",
           "main_eval", "main_score", "main_validate", "make_submission", "parse_aug_names", "pass_at_k",
           "predict_rows", "run_eval", "run_inference", "score_submission", "time_inference", "truth_ranks",
           "validate_submission", "vote", "write_eval_files", "write_submission"]


# ----------------------------------------------------------------------------------------------------------
# Inference
# ----------------------------------------------------------------------------------------------------------

ROW_STATS = ("valid", "accuracy", "exact", "q_halt_correct", "lm_loss")  # per row, for the loss-head metrics


def run_inference(model, dataset, *, steps: int | None = None, info=None, progress: bool = True,
                  noise_scale: float = 0.0, noise_samples: int = 0, noise_seed: int = 0) -> dict | None:
    """Predict every test row of `dataset` (a `PuzzleDataset` for split "test", built for this rank).

    Runs `steps` ACT steps (default: `halt_max_steps_eval or halt_max_steps`) under inference mode on the
    model's device, in its forward dtype. Padding rows are dropped. With several ranks each rank predicts
    its share and rank 0 receives everything (other ranks get None).
    noise_samples > 0: each row is also predicted that many more times with latent noise of standard deviation
    `noise_scale` (`trm_core.model.predict`; drawn from a generator seeded by noise_seed and the rank); those
    rows follow the row's deterministic prediction (same input, puzzle id and example_index; `noise_pass` > 0),
    so they vote in the same accumulator and ties still go to the deterministic answer.

    Returns (rank 0) numpy arrays sorted by `example_index`: `inputs`, `preds` (N, seq_len) uint8,
    `puzzle_identifiers` (N,) int32, `q_halt_logits` (N,) float32, `example_index` (N,) int64, and per row the
    loss head's quantities against the labels after the last step (`row_valid`, `row_accuracy`, `row_exact`,
    `row_q_halt_correct`, `row_lm_loss`; see `loss_head_metrics`), and `noise_pass` (N,) int16 (0 = the
    deterministic pass).
    """
    import torch

    from trm_core.model import predict

    device = next(model.parameters()).device
    bar = Progress(dataset.test_batches(), "inference", unit="batch", enabled=progress)
    keys = ("inputs", "preds", "puzzle_identifiers", "q_halt_logits", "example_index", "noise_pass") + tuple(
        f"row_{k}" for k in ROW_STATS)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    model.eval()
    generator = None
    if noise_samples > 0:
        rank = info.rank if info is not None else 0
        generator = torch.Generator(device=device).manual_seed(int(noise_seed) * 1_000_003 + rank)
    with torch.inference_mode():
        for batch in dataset.iter_test():
            ex = np.asarray(batch["example_index"]).reshape(-1)
            keep = ex >= 0
            if keep.any():
                inputs = torch.as_tensor(np.asarray(batch["inputs"])[keep])
                pids = torch.as_tensor(np.asarray(batch["puzzle_identifiers"])[keep])
                x, p = inputs.to(device, non_blocking=True), pids.to(device)
                labels = torch.as_tensor(np.asarray(batch["labels"])[keep]).to(device)
                outs = [predict(model, x, p, steps)]
                outs += [predict(model, x, p, steps, noise=noise_scale, generator=generator)
                         for _ in range(noise_samples)]
                for s, out in enumerate(outs):
                    parts["inputs"].append(inputs.numpy().astype(np.uint8))
                    parts["preds"].append(out["preds"].to(torch.uint8).cpu().numpy())
                    parts["puzzle_identifiers"].append(pids.numpy().astype(np.int32))
                    parts["q_halt_logits"].append(out["q_halt_logits"].float().cpu().numpy())
                    parts["example_index"].append(ex[keep].astype(np.int64))
                    parts["noise_pass"].append(np.full(int(keep.sum()), s, dtype=np.int16))
                    for k, v in _row_stats(model, out, labels).items():
                        parts[f"row_{k}"].append(v)
            bar.update(1)
    bar.close()
    seq_len = model.config.seq_len
    empty = {"inputs": np.zeros((0, seq_len), np.uint8), "preds": np.zeros((0, seq_len), np.uint8),
             "puzzle_identifiers": np.zeros(0, np.int32), "q_halt_logits": np.zeros(0, np.float32),
             "example_index": np.zeros(0, np.int64), "noise_pass": np.zeros(0, np.int16)} | {
        f"row_{k}": np.zeros(0, np.float64) for k in ROW_STATS}
    local = {k: (np.concatenate(v) if v else empty[k]) for k, v in parts.items()}
    if info is not None and info.world_size > 1:
        from trm_core.dist import gather_objects

        gathered = gather_objects(local, info)
        if gathered is None:
            return None
        local = {k: np.concatenate([g[k] for g in gathered]) for k in local}
    order = np.argsort(local["example_index"], kind="stable")
    return {k: v[order] for k, v in local.items()}


def _row_stats(model, out: dict, labels) -> dict[str, np.ndarray]:
    """The loss head's per-row quantities for one batch after its last ACT step (every row has halted)."""
    import torch

    from trm_core.model import LOSSES, row_metrics

    preds, q_halt = out["preds"].to(labels.device), out["q_halt_logits"].to(labels.device)
    rows = row_metrics(preds, labels, q_halt, torch.ones_like(q_halt, dtype=torch.bool))
    if "logits" in out:
        cfg = model.config
        token_loss = LOSSES[cfg.loss_type](out["logits"], labels, getattr(torch, cfg.loss_dtype))
        lm_loss = (token_loss / rows["divisor"]).sum(-1)
    else:  # a predict() that gives no logits (a stand-in model): no loss
        lm_loss = torch.full_like(q_halt, float("nan"), dtype=torch.float64)
    return {k: v.double().cpu().numpy() for k, v in (("valid", rows["valid"]), ("accuracy", rows["accuracy"]),
                                                      ("exact", rows["exact"]),
                                                      ("q_halt_correct", rows["q_halt_correct"]),
                                                      ("lm_loss", lm_loss))}


def loss_head_metrics(arrays: dict, steps: int) -> dict[str, float]:
    """The metrics upstream's evaluation logs for its single set "all": the ACT loss head's count, accuracy,
    exact_accuracy, q_halt_accuracy, steps and lm_loss after the last step, each summed over rows and divided
    by `count` (rows with at least one label), as upstream reduces eval metrics. `all/count` stays the sum."""
    valid = arrays["row_valid"].astype(bool)
    count = int(valid.sum())
    if not count:
        return {}
    out = {"all/count": count,
           "all/accuracy": float(arrays["row_accuracy"][valid].sum() / count),
           "all/exact_accuracy": float(arrays["row_exact"][valid].sum() / count),
           "all/q_halt_accuracy": float(arrays["row_q_halt_correct"][valid].sum() / count),
           "all/steps": float(steps)}
    lm_loss = arrays["row_lm_loss"]
    if not np.isnan(lm_loss).any():
        out["all/lm_loss"] = float(lm_loss.sum() / count)
    return out


# ----------------------------------------------------------------------------------------------------------
# A whole evaluation: checkpoint + dataset -> metrics.json, submission.json, per_task.csv, predictions.json
# ----------------------------------------------------------------------------------------------------------

def _known_solutions(test_puzzles: Mapping[str, Any]) -> dict[str, list] | None:
    """Test outputs from test_puzzles.json, or None when they are the builder's dummies ([[0]] everywhere)."""
    sols = {}
    for t, task in test_puzzles.items():
        outs = [pair.get("output") for pair in task["test"]]
        if any(o is None for o in outs):
            return None
        sols[t] = outs
    flat = [o for outs in sols.values() for o in outs]
    if not flat or all(o == [[0]] for o in flat):
        return None
    return sols


def _predictions_json(ranked: Ranked, challenges: Mapping[str, Any], solutions: Mapping[str, Any] | None,
                      top: int, candidates: int = 0) -> dict:
    """What `trm report` draws: per task, per test input, the input, the truth (or None) and the top candidates
    in submission order (votes, mean q and, when rescored, likelihood, per-rule scores and ranks:
    `trm_core.rescore.candidates_json`)."""
    from trm_core.rescore import candidates_json

    out = {}
    for task_id, inputs in _test_inputs_of(challenges).items():
        truths = (solutions or {}).get(task_id)
        out[task_id] = [{"input": np.asarray(x).tolist(),
                         "truth": np.asarray(truths[i]).tolist() if truths is not None else None,
                         "candidates": candidates_json(ranked.get((task_id, i), []), top, candidates)}
                        for i, x in enumerate(inputs)]
    return out


def run_eval(checkpoint: str | Path | Sequence[str | Path], data_dir: str | Path, output_dir: str | Path, *,
             arch: Mapping[str, Any] | None = None, steps: int | None = None, batch_size: int = 256,
             max_eval_augmentations: int | None = None, challenges: str | Path | None = None,
             solutions: str | Path | None = None, rank_by: str = "votes_then_q", fallback: str = "input",
             top: int = 10, device: str | None = None, info=None, progress: bool = True,
             count_empty_predictions: bool = False, compile: bool | None = None, selection=None,
             deadline: float | None = None) -> dict | None:
    """Evaluate `checkpoint` on the test split of `data_dir` and write the run's files into `output_dir`.

    Several checkpoints (a list, oldest first; e.g. the last N of one run): each one predicts every row and
    all their votes are pooled in one accumulator (checkpoints as an ensemble); the last one rescores.

    The checkpoint's puzzle embeddings must have been trained on this dataset's identifiers.json (same file):
    each augmented test input is looked up by its puzzle id, so another dataset gives meaningless predictions.
    A table whose size differs from the dataset's identifiers is refused (both sizes named, with the fix);
    trm_core checkpoints also record the file's hash, and a mismatch is refused.

    Args:
        arch: ArchConfig overrides for foreign checkpoints (e.g. {"puzzle_emb_len": 16, "L_cycles": 4}).
        steps: ACT steps per row (default: the checkpoint's halt_max_steps_eval or halt_max_steps).
        challenges: the challenges file whose tasks the submission must cover (default: test_puzzles.json).
        solutions: a solutions file for pass@K and the score (default: the outputs in test_puzzles.json
            unless they are all dummies).
        top: candidates per test input kept in predictions.json (for `trm report`).
        count_empty_predictions: empty predictions take votes and pass@K slots, as in upstream's evaluator.
        compile: run the recursion through torch.compile, as upstream evaluates its compiled model (None: on
            CUDA, off on CPU, as in training).
        selection: a `trm_core.rescore.Selection` (rule, candidates K, views M, latent noise); None = the
            default (`trm_core.rescore.DEFAULT_RULE`).
        deadline: time.time() by which pooling and rescoring must be done (see `evaluate_model`).
    Writes (rank 0): submission.json, metrics.json, per_task.csv, predictions.json. Returns the metrics.
    """
    import torch

    from trm_core import load_checkpoint

    data_dir, output_dir = Path(data_dir), Path(output_dir)
    rank, world = (info.rank, info.world_size) if info is not None else (0, 1)
    if device is None:
        device = info.device if info is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    t0 = time.perf_counter()
    # identifiers_path: the loader refuses a dataset whose identifiers.json is not the one the model was
    # trained with (when the checkpoint records its hash), since puzzle ids would then select the wrong rows.
    arch = dict(arch or {})
    # The user's files first: a malformed challenges or solutions file fails before minutes of inference.
    challenges = read_challenges(challenges) if challenges is not None else None
    solutions = read_solutions(solutions) if solutions is not None else None
    if torch.device(device).type == "cpu":  # bf16 matmuls are ~9x slower than fp32 on CPU
        arch.setdefault("forward_dtype", "float32")
    paths = [checkpoint] if isinstance(checkpoint, (str, Path)) else list(checkpoint)
    models = [load_checkpoint(c, identifiers_path=data_dir / "identifiers.json", device=device, **arch)
              for c in paths]
    compiled = compile if compile is not None else torch.device(device).type == "cuda"
    if compiled:
        for model in models:
            model.inner.L_level.compile()  # what the trainer compiles, in place (names and weights unchanged)
    extra = {"checkpoint": str(paths[-1]), "device": str(device), "compiled": compiled}
    if len(paths) > 1:
        extra["pooled_checkpoints"] = [str(c) for c in paths]
    metrics = evaluate_model(models if len(models) > 1 else models[0], data_dir, output_dir, steps=steps,
                             batch_size=batch_size, max_eval_augmentations=max_eval_augmentations,
                             challenges=challenges, solutions=solutions, rank_by=rank_by, fallback=fallback,
                             top=top, info=info, progress=progress,
                             count_empty_predictions=count_empty_predictions, extra=extra, selection=selection,
                             deadline=deadline)
    if metrics is not None:
        metrics["load_and_eval_seconds"] = round(time.perf_counter() - t0, 3)
    return metrics


def evaluate_model(model, data_dir: str | Path, output_dir: str | Path, *, steps: int | None = None,
                   batch_size: int = 256, max_eval_augmentations: int | None = None,
                   challenges: str | Path | None = None, solutions: str | Path | None = None,
                   rank_by: str = "votes_then_q", fallback: str = "input", top: int = 10, info=None,
                   progress: bool = True, extra: Mapping[str, Any] | None = None,
                   count_empty_predictions: bool = False, vote_pool: VotePool | None = None, selection=None,
                   deadline: float | None = None) -> dict | None:
    """Evaluate a model already in memory (the trainer's, or `run_eval`'s) on the test split of `data_dir`.

    Same outputs and arguments as `run_eval`; `extra` entries are copied into metrics.json. Every rank calls
    this (each predicts its share); rank 0 votes, writes the files and returns the metrics, others return None.
    `vote_pool` (rank 0): this evaluation's votes are added to it and the submission and pass@K come from
    everything it holds (upstream's aggregated voting over a run's evaluations). metrics.json also holds the
    loss head's metrics on the test labels (`all/accuracy`, ...; see `loss_head_metrics`).
    `model` may be a list of models (checkpoints of one run, oldest first): their votes are pooled (the newest
    model's rows first, so ties go to it) and the last one rescores. `selection` chooses the attempts
    (`trm_core.rescore`; None = the default rule). deadline (a time.time() value): older checkpoints are not
    inferred, and rescoring is skipped (the votes decide), when the time the last inference took says they
    would end past it. The newest model always votes.
    """
    from trm_core.data.dataset import PuzzleDataset
    from trm_core.rescore import Selection, select_attempts

    selection = selection if selection is not None else Selection()
    models = list(model) if isinstance(model, (list, tuple)) else [model]
    model = models[-1]  # the newest: it rescores, and its rows give the loss-head metrics
    data_dir, output_dir = Path(data_dir), Path(output_dir)
    rank, world = (info.rank, info.world_size) if info is not None else (0, 1)
    t0 = time.perf_counter()
    identifiers = read_json(data_dir / "identifiers.json")
    if not isinstance(identifiers, list) or not all(isinstance(x, str) for x in identifiers):
        raise InputError("must be a list of puzzle names (is this folder built by trm build-data?)",
                         file=data_dir / "identifiers.json")
    for m in models:
        _check_puzzle_table(m, len(identifiers), data_dir / "identifiers.json")
    dataset = PuzzleDataset([str(data_dir)], "test", global_batch_size=batch_size * world, rank=rank,
                            world_size=world, max_eval_augmentations=max_eval_augmentations)
    test_puzzles = read_challenges(data_dir / "test_puzzles.json")
    noise = dict(noise_scale=selection.noise_scale, noise_samples=selection.noise_samples,
                 noise_seed=selection.noise_seed) if selection.noise_samples else {}
    n_inputs = max(1, sum(len(t["test"]) for t in test_puzzles.values()))
    # Rescoring costs `views` rows per test input, at the voting inference's measured speed.
    voting_rows = max(1, dataset.num_test_examples)
    rescore_share = selection.views_per_input(-(-voting_rows // n_inputs)) * n_inputs / voting_rows
    runs, last_s = [], 0.0
    for k, m in enumerate(reversed(models)):  # the newest votes first; older checkpoints while time allows
        t = time.perf_counter()
        runs.append(run_inference(m, dataset, steps=steps, info=info, progress=progress, **noise))
        last_s = time.perf_counter() - t
        if k + 1 < len(models) and _past(deadline, RESCORE_SAFETY * last_s * (1 + rescore_share), info):
            break
    t_infer = time.perf_counter() - t0
    if runs[0] is None:  # not rank 0
        return None
    arrays = runs[0] if len(runs) == 1 else {k: np.concatenate([r[k] for r in runs]) for k in runs[0]}

    chal = read_challenges(challenges) if challenges is not None else test_puzzles
    sols = read_solutions(solutions) if solutions is not None else _known_solutions(test_puzzles)
    # Vote for every task of the submission; test_puzzles.json supplies tasks only it knows (for pass@K).
    test_inputs = _test_inputs_of(chal)
    for t, grids in _test_inputs_of(test_puzzles).items():
        test_inputs.setdefault(t, grids)

    t1 = time.perf_counter()
    acc = VoteAccumulator(identifiers, test_inputs, canvas=math.isqrt(model.config.seq_len),
                          count_empty=count_empty_predictions)
    acc.add(arrays["inputs"], arrays["preds"], arrays["puzzle_identifiers"], arrays["q_halt_logits"])
    ranked = acc.ranked(rank_by)
    if vote_pool is not None:
        ranked = vote_pool.add(ranked, rank_by)
    t_vote = time.perf_counter() - t1
    skipped = {}
    if selection.rescores and _past(deadline, RESCORE_SAFETY * last_s * rescore_share, None):
        skipped = {"rescore_skipped": "deadline"}  # the votes decide: rescoring would end past the deadline
        selection = replace(selection, rule="votes")
    ranked, scored, select_info = select_attempts(model, arrays, identifiers, test_inputs, ranked, selection,
                                                  batch_size=batch_size, steps=steps)
    select_info.update(skipped)

    submission = make_submission(chal, ranked, fallback)
    problems = validate_submission(submission, chal)
    if problems:  # our own bug if it happens: fail loudly rather than ship a broken file
        raise RuntimeError("built an invalid submission:\n" + "\n".join(problems))
    prepare_output_dir(output_dir)
    write_submission(output_dir / "submission.json", submission)
    metrics: dict[str, Any] = {
        **dict(extra or {}), "data_dir": str(data_dir), "rank_by": rank_by, "fallback": fallback,
        "steps": steps or model.config.eval_steps, "world_size": world,
        "inference_seconds": round(t_infer, 3), "voting_seconds": round(t_vote, 3), **acc.stats,
        "count_empty_predictions": count_empty_predictions,
        "aggregated_evaluations": vote_pool.evaluations if vote_pool is not None else 1,
        "selection": selection.as_dict(), **select_info, "models_pooled": len(runs),
        # the newest model's deterministic pass, as without pooling or noise
        **loss_head_metrics({k: v[runs[0]["noise_pass"] == 0] for k, v in runs[0].items()},
                            steps or model.config.eval_steps),
    }
    return write_eval_files(output_dir, chal, sols, ranked, submission, metrics, rank_by=rank_by, top=top,
                            selection=selection, scored=scored)


def write_eval_files(output_dir: Path, challenges: Mapping[str, Any], solutions: Mapping[str, Any] | None,
                     ranked: Ranked, submission: Mapping[str, Any], metrics: dict, *, rank_by: str = "votes_then_q",
                     top: int = 10, selection=None, scored: Ranked | None = None) -> dict:
    """metrics.json (with pass@K and the Kaggle score when `solutions` are known, and every selection rule's on
    the `scored` candidates when `selection` rescored), predictions.json (what `trm report` draws) and
    per_task.csv of one evaluation in `output_dir`; returns the metrics."""
    from trm_core.rescore import Selection, pass_by_rule

    selection = selection if selection is not None else Selection(rule="votes")
    n_test = sum(len(v) for v in _test_inputs_of(challenges).values())
    no_prediction = [f"{t}:{i}" for (t, i), c in ranked.items()
                     if t in challenges and not any(x.grid.size for x in c)]
    metrics = {**metrics, "tasks": len(challenges), "test_inputs": n_test,
               "test_inputs_without_prediction": len(no_prediction)}
    per_task_pass: dict = {}
    per_task_score: dict = {}
    if solutions is not None:
        voted = {t for t, _ in ranked}  # the submission's tasks, and those only test_puzzles.json knows
        solutions = {t: v for t, v in solutions.items() if t in voted}
        pk = pass_at_k(ranked, solutions)
        per_task_pass = pk["per_task"]
        metrics.update({f"ARC/{k}": v for k, v in pk["overall"].items()})
        score, per_task_score = score_submission(submission, solutions)
        metrics["kaggle_score"] = score
        if selection.rescores and scored is not None:  # every rule on the same scored candidates
            for rule, values in pass_by_rule(scored, solutions, selection.candidates).items():
                metrics.update({f"ARC/{rule}/{k}": v for k, v in values.items()})
    atomic_write_text(output_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    head = selection.candidates if selection.rescores else 0
    atomic_write_text(output_dir / "predictions.json",
                      json.dumps({"rank_by": rank_by, "select": selection.rule if selection.rescores else "votes",
                                  "selection": selection.as_dict(),
                                  "tasks": _predictions_json(ranked, challenges, solutions, top, head)}))
    _write_per_task_csv(output_dir / "per_task.csv", challenges, ranked, per_task_pass, per_task_score)
    return metrics


RESCORE_SAFETY = 1.25  # the next inference or the rescoring may run this much slower than the last inference did


def _past(deadline: float | None, seconds: float, info) -> bool:
    """Whether `seconds` more work would end past `deadline` (a time.time() value; None = no deadline), agreed
    by every rank (one all-reduce) so that all of them take the same branch."""
    if deadline is None:
        return False
    late = time.time() + seconds > deadline
    if info is not None and info.world_size > 1:
        import torch

        from trm_core.dist import all_reduce_sum_

        flag = torch.tensor([float(late)], device=info.device)
        all_reduce_sum_([flag], info)
        late = bool(flag.item() > 0)
    return late


def _check_puzzle_table(model, n_ids: int, identifiers_path: Path) -> None:
    """Refuse to evaluate a model whose puzzle table does not have one row per identifier of the dataset (every
    rank checks, so none is left waiting): its predictions would silently use other puzzles' embeddings."""
    from trm_core.checkpoint import CheckpointError, puzzle_table_mismatch

    table = getattr(getattr(model, "puzzle_emb", None), "weights", None)
    if table is not None and table.shape[0] != n_ids:
        raise CheckpointError(puzzle_table_mismatch("the model", table.shape[0], n_ids, str(identifiers_path)))


def _write_per_task_csv(path: Path, challenges: Mapping[str, Any], ranked: Ranked, per_task_pass: dict,
                        per_task_score: dict) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["task_id", "n_test", "pass@1", "pass@2", "kaggle_correct", "top1_votes", "top2_votes",
                "n_candidates"])
    for task_id, task in challenges.items():
        n = len(task["test"])
        cands = [ranked.get((task_id, i), []) for i in range(n)]
        p = per_task_pass.get(task_id, {})
        correct = per_task_score.get(task_id)
        w.writerow([task_id, n, p.get("pass@1", ""), p.get("pass@2", ""),
                    "" if correct is None else sum(correct),
                    " ".join(str(c[0].votes) if c else "0" for c in cands),
                    " ".join(str(c[1].votes) if len(c) > 1 else "0" for c in cands),
                    " ".join(str(len(c)) for c in cands)])
    atomic_write(path, lambda f: f.write(buf.getvalue().encode()))


# ----------------------------------------------------------------------------------------------------------
# Inference in rounds under a deadline (the Kaggle runner's `infer` phase)
# ----------------------------------------------------------------------------------------------------------

def predict_rows(models: Sequence[Any], batch: Mapping[str, Any], steps: int | None = None, *,
                 noise_scale: float = 0.0, generators: Sequence[Any] | None = None) -> dict[str, np.ndarray]:
    """Predict one batch (`PuzzleDataset.test_batch`), its rows split evenly over `models` (one replica per
    device, one thread each: the devices compute at once while Python waits, as nn.DataParallel does).
    `noise_scale` > 0: a noisy pass (`trm_core.model.predict`), drawn from `generators` (one per replica)."""
    import torch

    from trm_core.model import predict

    def run(k: int, rows: slice) -> tuple[np.ndarray, np.ndarray]:
        model = models[k]
        noise = dict(noise=noise_scale, generator=generators[k]) if noise_scale > 0 else {}
        with torch.inference_mode():  # grad mode is per thread
            dev = next(model.parameters()).device
            out = predict(model, batch["inputs"][rows].to(dev), batch["puzzle_identifiers"][rows].to(dev), steps,
                          **noise)
            return out["preds"].to(torch.uint8).cpu().numpy(), out["q_halt_logits"].float().cpu().numpy()

    bounds = np.linspace(0, len(batch["inputs"]), len(models) + 1).astype(int)
    shares = [(k, slice(a, b)) for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])) if b > a]
    if len(shares) == 1:
        parts = [run(*shares[0])]
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(shares)) as pool:
            parts = list(pool.map(lambda share: run(*share), shares))
    return {"inputs": np.asarray(batch["inputs"]).astype(np.uint8), "preds": np.concatenate([p[0] for p in parts]),
            "puzzle_identifiers": np.asarray(batch["puzzle_identifiers"]),
            "q_halt_logits": np.concatenate([p[1] for p in parts])}


def time_inference(model, dataset, rows: np.ndarray, steps: int | None = None) -> tuple[float, dict]:
    """Seconds per row to predict `rows` of `dataset` (after one untimed call on two rows: first-call
    allocations, kernel choice), and the predictions."""
    predict_rows([model], dataset.test_batch(rows[:2]), steps)
    t = time.perf_counter()
    out = predict_rows([model], dataset.test_batch(rows), steps)  # copied to the CPU: the device is done
    return (time.perf_counter() - t) / len(rows), out


def infer_in_rounds(models: Sequence[Sequence[Any]], dataset, acc: VoteAccumulator,
                    rounds: Sequence[tuple[int, int]], *, batch_size: int, row_s: float,
                    time_left: Callable[[], float], on_round: Callable[[bool], float], reserve_s: float = 0.0,
                    steps: int | None = None, noise_scale: float = 0.0, noise_samples: int = 0, noise_seed: int = 0,
                    voted: list | None = None, state: dict | None = None) -> dict:
    """Predict the test rows of `dataset` round by round and vote them into `acc`.

    `models`: the checkpoints whose votes are pooled, newest first (ties go to it), each as its list of device
    replicas; each also votes `noise_samples` noisy passes per row (`noise_scale`, seeded by `noise_seed`).
    A round is the augmentation levels [lo, hi) of every task (`trm_core.budget.vote_rounds`: the originals
    first, then doubling levels). Before each batch, its time (the slowest seconds per row of the last three
    batches, every pass included; `row_s` until then) plus `reserve_s` must fit in `time_left()`, else
    inference stops there. After each round, and once where it stops early, `on_round(complete)` writes the
    submission and returns the seconds that took; twice that is kept free from then on (voting grows with the
    rows). `voted` (a list) receives each batch's deterministic rows of the newest model (for rescoring).
    `state` (updated in place; a heartbeat may read it) and the return value hold rounds, rows, levels done
    and why it stopped.
    """
    import torch

    state = {} if state is None else state
    state.update(rounds=0, rows=0, levels=0, complete=False, stopped=None)
    generators = [[torch.Generator(device=next(m.parameters()).device).manual_seed(noise_seed * 1_000_003 + k)
                   for k, m in enumerate(replicas)] for replicas in models] if noise_samples else None
    recent = [row_s]
    chunk = batch_size * len(models[0])
    for r, (lo, hi) in enumerate(rounds):
        rows = dataset.test_rows(lo, hi)
        if not len(rows):  # no task has this many versions (a build with fewer augmentations): all voted
            break
        for start in range(0, len(rows), chunk):
            part = rows[start:start + chunk]
            if max(recent[-3:]) * len(part) + reserve_s > time_left():
                state["stopped"] = (f"round {r + 1} of {len(rounds)} (levels {lo}..{hi - 1}) at row {start} of "
                                    f"{len(rows)}: the next batch would not end in time")
                if state["rows"] and (start or lo):  # votes since the last submission: write them
                    on_round(False)
                return state
            t, batch = time.perf_counter(), dataset.test_batch(part)
            for m, replicas in enumerate(models):
                for n in range(1 + noise_samples):
                    out = predict_rows(replicas, batch, steps, noise_scale=noise_scale if n else 0.0,
                                       generators=generators[m] if generators else None)
                    acc.add(out["inputs"], out["preds"], out["puzzle_identifiers"], out["q_halt_logits"])
                    if voted is not None and m == 0 and n == 0:
                        voted.append(out)
            recent.append((time.perf_counter() - t) / len(part))
            state["rows"] += len(part)
        reserve_s = max(reserve_s, 2 * on_round(True))
        state.update(rounds=r + 1, levels=hi)
    state["complete"] = True
    return state


# ----------------------------------------------------------------------------------------------------------
# Command-line entry point (`trm eval`)
# ----------------------------------------------------------------------------------------------------------

def main_eval(argv: Sequence[str] | None = None) -> int:
    from trm_core.rescore import DEFAULT_RULE, SELECT_RULES, Selection, views_arg

    p = argparse.ArgumentParser(
        prog="trm eval", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Example:\n  trm eval --checkpoint runs/arc2/step_5000.pt --data data/built/arc2concept-aug-1000 "
                    "--output-dir runs/arc2_eval\n\n"
                    "Predict every augmented test input of a dataset built by `trm build-data`, vote, and write\n"
                    "submission.json, metrics.json (pass@K and the Kaggle score when solutions are known),\n"
                    "per_task.csv and predictions.json (read by `trm report`). The checkpoint's puzzle\n"
                    "embeddings must have been trained on this dataset's identifiers.json. Multi-GPU:\n"
                    "torchrun --nproc-per-node N -m trm_core.cli eval ...")
    p.add_argument("--checkpoint", required=True, action="append",
                   help="trm_core, upstream step_N or fork checkpoint; repeat it to pool the votes of several "
                        "checkpoints (oldest first: the last one rescores)")
    p.add_argument("--data", default="data/built/arc2concept-aug-1000",
                   help="dataset folder with a test split (built by `trm build-data`)")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--arch", action="append", default=[], metavar="KEY=VALUE",
                   help="architecture override for foreign checkpoints, e.g. --arch puzzle_emb_len=16 (repeatable)")
    p.add_argument("--steps", type=int, default=None, help="ACT steps per row (default: halt_max_steps_eval)")
    p.add_argument("--batch-size", type=int, default=256, help="rows per forward pass per GPU")
    p.add_argument("--max-eval-augmentations", type=int, default=None,
                   help="keep the original and the first N augmentations of each task")
    p.add_argument("--challenges", default=None, help="tasks the submission must cover (default: the dataset's)")
    p.add_argument("--solutions", default=None, help="solutions file for pass@K and the score")
    p.add_argument("--rank-by", choices=RANK_RULES, default="votes_then_q")
    p.add_argument("--fallback", choices=FALLBACKS, default="input",
                   help="attempt used where the model gave fewer than two usable grids")
    p.add_argument("--top", type=int, default=10,
                   help="candidates per test input kept in predictions.json (trm report, trm pool)")
    p.add_argument("--count-empty-predictions", action="store_true",
                   help="empty predictions take votes and pass@K slots, as in upstream's evaluator (never submitted)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="run the recursion through torch.compile, as upstream evaluates (default: on CUDA only)")
    p.add_argument("--select", choices=SELECT_RULES, default=DEFAULT_RULE,
                   help=f"(default {DEFAULT_RULE}) how the two attempts are chosen among the top "
                        "--select-candidates by votes: votes (count, then mean q), poe (product of the "
                        "candidate's probabilities over --select-views augmented views), mean_logprob (per-token "
                        "mean), votes_then_logprob, hybrid (log votes + mean view log-prob); see trm_core/rescore.py")
    p.add_argument("--select-candidates", type=int, default=Selection.candidates,
                   help="K: candidates per test input rescored (likelihood rules)")
    p.add_argument("--select-views", type=views_arg, default=Selection.views, metavar="M|all",
                   help="M: augmented views each candidate is scored under, one extra forward row each "
                        "(default all: every view that voted)")
    p.add_argument("--noise-scale", type=float, default=0.0, help="latent noise std for the extra noisy passes")
    p.add_argument("--noise-samples", type=int, default=0, help="noisy passes per row that also vote (0 = off)")
    p.add_argument("--noise-seed", type=int, default=0)
    p.add_argument("--deadline", type=float, default=None,
                   help="unix time by which it must end: older pooled checkpoints and rescoring are dropped to meet it")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    selection = Selection(rule=args.select, candidates=args.select_candidates, views=args.select_views,
                          noise_scale=args.noise_scale, noise_samples=args.noise_samples, noise_seed=args.noise_seed)

    from trm_core import dist
    from trm_core.config import parse_overrides

    arch = parse_overrides(args.arch, "--arch")
    prepare_output_dir(args.output_dir)  # an unusable output folder fails now, not after the inference
    info = dist.init_distributed(args.device or "auto")
    try:
        metrics = run_eval(args.checkpoint, args.data, args.output_dir, arch=arch, steps=args.steps,
                           batch_size=args.batch_size, max_eval_augmentations=args.max_eval_augmentations,
                           challenges=args.challenges, solutions=args.solutions, rank_by=args.rank_by,
                           fallback=args.fallback, top=args.top, device=info.device, info=info,
                           progress=not args.no_progress, count_empty_predictions=args.count_empty_predictions,
                           compile=args.compile, selection=selection, deadline=args.deadline)
    except ValueError as e:  # CheckpointError included: a wrong checkpoint/dataset pair is the user's to fix
        print(f"trm eval: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    finally:
        dist.cleanup()
    if metrics is not None:
        shown = {k: v for k, v in metrics.items() if k.startswith("ARC/pass@") or k == "kaggle_score"
                 or (k.startswith("ARC/") and k.endswith("/pass@2"))}
        print(json.dumps(shown or {"tasks": metrics["tasks"]}, indent=2))
        print(f"wrote {Path(args.output_dir) / 'submission.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main_eval())
