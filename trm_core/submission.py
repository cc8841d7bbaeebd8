"""The ARC Prize submission.json: build, write, validate, score; `trm score` and `trm validate`.

    trm score runs/arc2_eval/submission.json data/arc/arc-agi_evaluation2_solutions.json.gz
    trm validate runs/arc2_eval/submission.json data/arc/arc-agi_evaluation2_challenges.json.gz

`make_submission` (always complete: a test input with no usable prediction gets a fallback), `write_submission`
(atomic), `validate_submission` (every problem, one line each), `score_submission` / `kaggle_score` (Kaggle's
score: pass@2 over all test outputs), `cell_accuracy` (how close the better attempt came, for tuning). The
candidates come from `trm_core.voting`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trm_core.jsonio import short, show_id
from trm_core.utils import atomic_write_text, prepare_output_dir
from trm_core.voting import MAX_SIDE, Ranked

FALLBACKS = ("input", "zeros")


def _test_inputs_of(challenges: Mapping[str, Any]) -> dict[str, list[Any]]:
    return {t: [pair["input"] for pair in task["test"]] for t, task in challenges.items()}


def make_submission(challenges: Mapping[str, Any], ranked: Ranked, fallback: str = "input") -> dict:
    """The ARC Prize submission for every task of `challenges` (raw challenges dict), test inputs in order.

    attempt_1/attempt_2 are the two best candidates that are grids (an empty prediction, kept as a candidate
    when upstream's counting is asked for, is skipped: Kaggle rejects a 0x0 grid). Where fewer than two exist
    the gap is filled with the fallback: "input" = the test input itself (right for the rare identity-like
    task, and always a valid grid), "zeros" = [[0]]. So the file is complete whatever the model did.
    """
    if fallback not in FALLBACKS:
        raise ValueError(f"fallback must be one of {FALLBACKS}, got {fallback!r}")
    sub = {}
    for task_id, inputs in _test_inputs_of(challenges).items():
        entries = []
        for i, grid in enumerate(inputs):
            attempts = [c.grid.tolist() for c in ranked.get((task_id, i), []) if c.grid.size][:2]
            spare = [[int(v) for v in row] for row in grid] if fallback == "input" else [[0]]
            while len(attempts) < 2:
                attempts.append(spare)
            entries.append({"attempt_1": attempts[0], "attempt_2": attempts[1]})
        sub[task_id] = entries
    return sub


def write_submission(path: str | Path, submission: Mapping[str, Any]) -> Path:
    """Write submission.json atomically (temp file in the same folder, fsync, os.replace)."""
    return atomic_write_text(path, json.dumps(submission, separators=(",", ":")))


def _read(obj_or_path: Any) -> tuple[Any, Any]:
    """(content, name for messages): a path is read through the input boundary (limits, duplicate ids)."""
    if isinstance(obj_or_path, (str, Path)):
        from trm_core.jsonio import read_json

        return read_json(obj_or_path), obj_or_path
    return obj_or_path, None


def read_challenges(obj_or_path: Any, *, need_inputs: bool = True) -> dict:
    """A challenges dict or file, checked (`trm_core.jsonio.check_challenges`); raises InputError."""
    from trm_core.jsonio import check_challenges

    data, name = _read(obj_or_path)
    return check_challenges(data, name or "challenges", need_inputs=need_inputs)


def read_solutions(obj_or_path: Any) -> dict:
    """A solutions dict or file (task id -> output grids), checked; a challenges file is named as such."""
    from trm_core.jsonio import check_solutions

    data, name = _read(obj_or_path)
    return check_solutions(data, name or "solutions")


def read_submission(obj_or_path: Any) -> dict:
    """A submission dict or file: readable JSON with an object at the top (entries are `validate_submission`'s)."""
    from trm_core.jsonio import check_submission_object

    data, name = _read(obj_or_path)
    return check_submission_object(data, name or "submission")


def _load(obj_or_path: Any, what: str) -> tuple[Any, list[str]]:
    """(checked challenges or solutions, []) or (None, [the problem]); kept for callers of the old API."""
    from trm_core.jsonio import InputError

    try:
        return (read_solutions(obj_or_path) if what == "solutions" else read_challenges(obj_or_path)), []
    except InputError as e:
        return None, [str(e)]


def _grid_problems(grid: Any, where: str) -> list[str]:
    if not isinstance(grid, list):
        return [f"{where}: grid must be a list of rows, got {type(grid).__name__}"]
    if not grid:
        return [f"{where}: grid has no rows (0x0)"]
    problems = []
    if len(grid) > MAX_SIDE:
        problems.append(f"{where}: {len(grid)} rows, more than {MAX_SIDE}")
    widths, not_lists, bad = set(), [], []
    for r, row in enumerate(grid):
        if not isinstance(row, list):
            not_lists.append(r)
            continue
        widths.add(len(row))
        bad.extend(v for v in row if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 9)
    if not_lists:
        problems.append(f"{where}: rows {not_lists[:5]} are not lists (a grid is a list of rows of ints)")
    if bad:
        problems.append(f"{where}: {len(bad)} values outside the integers 0..9, e.g. {short(bad[:3])}")
    if 0 in widths:
        problems.append(f"{where}: grid has an empty row")
    if len(widths) > 1:
        problems.append(f"{where}: rows have different lengths {sorted(widths)} (not rectangular)")
    if widths and max(widths) > MAX_SIDE:
        problems.append(f"{where}: {max(widths)} columns, more than {MAX_SIDE}")
    return problems


def validate_submission(submission: Any, challenges: Any, *, name: str | Path | None = None) -> list[str]:
    """Every problem that would make Kaggle reject or mis-score `submission` (dict or path) against
    `challenges` (raw dict or path, .json or .json.gz); an empty list means the file is valid.

    A challenges file that cannot be used raises InputError (it is not the thing being judged); a task with
    `"test": []` has no test input and expects `[]`. A submission file that cannot be read is one problem.
    Problems start with `name` (default: the submission's path, if one is given)."""
    from trm_core.jsonio import InputError

    if name is None and isinstance(submission, (str, Path)):
        name = submission
    challenges = read_challenges(challenges, need_inputs=False)
    try:
        content = _read(submission)[0]
    except InputError as e:
        return [str(e)]
    return _validate_content(content, challenges, name)


def _validate_content(submission: Any, challenges: dict, name: Any) -> list[str]:
    """`validate_submission` on parsed content (a JSON string at the top is content, never a path)."""
    from trm_core.jsonio import InputError, check_submission_object

    try:
        submission = check_submission_object(submission, name or "submission")
    except InputError as e:
        return [str(e)]
    prefix = f"{name}: " if name is not None else ""
    problems = []
    for task_id in challenges:
        if task_id not in submission:
            problems.append(f"{prefix}task {show_id(task_id)}: missing")
    for task_id in submission:
        if task_id not in challenges:
            problems.append(f"{prefix}task {show_id(task_id)}: not in the challenges file")
    for task_id, task in challenges.items():
        entries = submission.get(task_id)
        if entries is None:
            continue
        if not isinstance(entries, list):
            problems.append(f"{prefix}task {show_id(task_id)}: must be a list (one entry per test input), "
                            f"got {type(entries).__name__}")
            continue
        n_test = len(task["test"])
        if len(entries) != n_test:
            problems.append(f"{prefix}task {show_id(task_id)}: {len(entries)} entries for {n_test} test inputs")
        for i, entry in enumerate(entries):
            where = f"{prefix}task {show_id(task_id)} test {i}"
            if not isinstance(entry, dict):
                problems.append(f"{where}: must be an object with attempt_1 and attempt_2, "
                                f"got {type(entry).__name__}")
                continue
            for key in ("attempt_1", "attempt_2"):
                if key not in entry:
                    problems.append(f"{where}: missing {key}")
                else:
                    problems.extend(_grid_problems(entry[key], f"{where} {key}"))
            extra = sorted(set(entry) - {"attempt_1", "attempt_2"})
            if extra:
                problems.append(f"{where}: unexpected keys {[show_id(k) for k in extra[:5]]}")
    return problems


def _per_output(submission: Any, solutions: Any, value) -> tuple[float, dict[str, list]]:
    """`value(truth, attempts)` for every test output of `solutions`, where attempts are the submission's
    attempt_1 and attempt_2 for it (none for a missing or malformed entry): (the mean over all test outputs,
    per task one value per test output). Both files go through the input boundary (`read_solutions`,
    `read_submission`)."""
    solutions = read_solutions(solutions)
    submission = read_submission(submission)
    per_task: dict[str, list] = {}
    for task_id, outputs in solutions.items():
        entries = submission.get(task_id)
        values = []
        for i, truth in enumerate(outputs):
            entry = entries[i] if isinstance(entries, list) and i < len(entries) else None
            attempts = [entry.get(k) for k in ("attempt_1", "attempt_2")] if isinstance(entry, dict) else []
            values.append(value(np.asarray(truth), [a for a in attempts if a is not None]))
        per_task[task_id] = values
    total = sum(len(v) for v in per_task.values())
    return (sum(sum(v) for v in per_task.values()) / total if total else 0.0), per_task


def score_submission(submission: Any, solutions: Any) -> tuple[float, dict[str, list[bool]]]:
    """Kaggle's score: a test output counts 1 if attempt_1 or attempt_2 equals it exactly; the score is the
    number of such outputs over all test outputs of `solutions` (dict or path). Also returns, per task, one
    bool per test output. A missing or malformed entry counts as wrong. Files go through the input boundary:
    an unreadable submission, a malformed solutions file or a challenges file passed as solutions raise
    InputError."""
    return _per_output(submission, solutions, lambda truth, attempts: truth.tolist() in attempts)


def _best_cell_fraction(truth: np.ndarray, attempts: list) -> float:
    best = 0.0
    for attempt in attempts:
        try:
            grid = np.asarray(attempt)
        except (TypeError, ValueError):  # ragged rows
            continue
        if grid.shape == truth.shape and truth.size:
            best = max(best, float((grid == truth).mean()))
    return best


def cell_accuracy(submission: Any, solutions: Any) -> tuple[float, dict[str, list[float]]]:
    """How close the attempts came, for tuning where exact solves are too rare to rank settings: per test output,
    the fraction of cells the better attempt gets right, 0 when neither attempt has the output's shape (a missing
    or malformed entry counts 0). Returns the mean over all test outputs of `solutions` and, per task, one
    fraction per test output. 1.0 for an output is exactly `score_submission`'s success."""
    return _per_output(submission, solutions, _best_cell_fraction)


def kaggle_score(submission: Any, solutions: Any) -> float:
    """pass@2 over all test outputs (see `score_submission`)."""
    return score_submission(submission, solutions)[0]


# ----------------------------------------------------------------------------------------------------------
# Fallback submissions (the Kaggle runner writes one before any other work)
# ----------------------------------------------------------------------------------------------------------

def fallback_challenges(challenges: Mapping[str, Any]) -> dict:
    """Every task id of a raw challenges dict with one usable test input grid per test entry.

    Unusable test inputs (a 31-column grid, a colour 12, not a dict) become `[[0]]`; a task whose test field is
    not a list gets one entry, and a task with `"test": []` none (as `trm validate` expects: one entry per test
    input). This is what the submission is validated against, so malformed tasks cannot crash it.
    """
    from trm_core.jsonio import grid_problem

    out = {}
    for task_id, task in challenges.items():
        tests = task.get("test") if isinstance(task, dict) else None
        if not isinstance(tests, list):
            tests = [None]
        grids = [t.get("input") if isinstance(t, dict) else None for t in tests]
        out[task_id] = {"test": [{"input": g if grid_problem(g) is None else [[0]]} for g in grids]}
    return out


def fallback_submission(challenges: Mapping[str, Any]) -> dict:
    """A valid submission whose attempts are the test inputs (`[[0]]` where unusable)."""
    return {t: [{"attempt_1": e["input"], "attempt_2": e["input"]} for e in task["test"]]
            for t, task in fallback_challenges(challenges).items()}


def write_fallback_submission(challenges: Mapping[str, Any] | str | Path, path: str | Path) -> dict:
    """Write (atomically) and return `fallback_submission` of a raw challenges dict or file."""
    from trm_core.data.arc import load_challenges_json

    raw = load_challenges_json(challenges) if isinstance(challenges, (str, Path)) else challenges
    sub = fallback_submission(raw)
    write_submission(path, sub)
    return sub


def merge_into_fallback(challenges: Mapping[str, Any], tasks: Mapping[str, Any], ranked: Ranked) -> dict:
    """The fallback submission of (raw, possibly malformed) `challenges` with `tasks`' entries replaced by
    `make_submission(tasks, ranked)`; raises RuntimeError, naming the problems, if the result is not valid."""
    merged = {**fallback_submission(challenges), **make_submission(tasks, ranked)}
    problems = check_submission(merged, challenges)
    if problems:  # our own bug if it happens: the caller keeps its previous file
        raise RuntimeError("merged submission is invalid (kept the previous one): " + "; ".join(problems[:5]))
    return merged


def check_submission(submission: Any, challenges: Mapping[str, Any] | str | Path | None) -> list[str]:
    """Problems of a submission against a (possibly malformed) challenges file; [] = valid for Kaggle."""
    from trm_core.data.arc import load_challenges_json

    if challenges is None:
        return ["no challenges file was read: nothing to validate against"]
    raw = load_challenges_json(challenges) if isinstance(challenges, (str, Path)) else challenges
    return validate_submission(submission, fallback_challenges(raw))


# ----------------------------------------------------------------------------------------------------------
# Command-line entry points (`trm score`, `trm validate`)
# ----------------------------------------------------------------------------------------------------------

def main_score(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="trm score", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Example:\n  trm score runs/arc2_eval/submission.json "
                    "data/arc/arc-agi_evaluation2_solutions.json.gz\n\n"
                    "Print the Kaggle score (a test output counts if attempt_1 or attempt_2 matches it;\n"
                    "score = matched outputs / all test outputs) and one line per task.")
    p.add_argument("submission")
    p.add_argument("solutions", help="task id -> [output grid per test input] (.json or .json.gz)")
    p.add_argument("--quiet", action="store_true", help="print only the score")
    args = p.parse_args(argv)
    score, per_task = score_submission(args.submission, args.solutions)  # InputError: one line, exit 2 (trm_core.cli)
    if not args.quiet:
        for task_id, results in per_task.items():
            print(f"{show_id(task_id)}  {sum(results)}/{len(results)}  {' '.join('1' if r else '0' for r in results)}")
    total = sum(len(r) for r in per_task.values())
    print(f"score {score:.4f} ({sum(sum(r) for r in per_task.values())}/{total} test outputs, "
          f"{len(per_task)} tasks)")
    return 0


def main_validate(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="trm validate", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Example:\n  trm validate /kaggle/working/submission.json "
                    "/kaggle/input/arc-prize-2025/arc-agi_test_challenges.json\n\n"
                    "Check a submission.json against a challenges file. Exit 0 and print 'valid' only for a\n"
                    "valid file; otherwise print one line per problem and exit 1. A file that cannot be read\n"
                    "as JSON, or a challenges file that cannot be used, is one line on stderr and exit 2.")
    p.add_argument("submission")
    p.add_argument("challenges")
    args = p.parse_args(argv)
    from trm_core.jsonio import read_json

    challenges = read_challenges(args.challenges, need_inputs=False)  # InputError: exit 2 (trm_core.cli)
    submission = read_json(args.submission)
    problems = _validate_content(submission, challenges, args.submission)
    for line in problems:
        print(line)
    if not problems:
        print("valid")
    return 1 if problems else 0


def pool_predictions(prediction_files: Sequence[str | Path], challenges: Any, *, rank_by: str = "votes_then_q",
                     fallback: str = "input") -> dict:
    """One submission from several evaluations' predictions.json files (an ensemble): votes of identical grids
    add up (`trm_core.voting.pool_ranked`). `challenges` (dict or path) decides the tasks and test inputs."""
    from trm_core.jsonio import check_predictions, read_json
    from trm_core.voting import pool_ranked, ranked_from_predictions

    chal = read_challenges(challenges)
    rankeds = [ranked_from_predictions(check_predictions(read_json(path, tasks_at=("tasks",)), path))
               for path in prediction_files]
    return make_submission(chal, pool_ranked(rankeds, rank_by), fallback)


def write_pooled(prediction_files: Sequence[str | Path], challenges: Any, output_dir: str | Path, *,
                 solutions: Any = None, rank_by: str = "votes_then_q", fallback: str = "input",
                 top: int = 10) -> dict:
    """Pool several evaluations' predictions.json (`pool_ranked`) and write output_dir/submission.json,
    predictions.json (the pooled candidates and votes, for `trm report`) and metrics.json (pass@K and the
    Kaggle score when `solutions` -- dict, path, or None for the truths stored in the files -- are known)."""
    from trm_core.evaluate import _predictions_json
    from trm_core.jsonio import check_predictions, read_json
    from trm_core.voting import pass_at_k, pool_ranked, ranked_from_predictions

    chal = read_challenges(challenges)
    rankeds, truths = [], {}
    for path in prediction_files:
        data = check_predictions(read_json(path, tasks_at=("tasks",)), path)
        rankeds.append(ranked_from_predictions(data))
        for task_id, entries in data["tasks"].items():
            if entries and all(e.get("truth") is not None for e in entries):
                truths.setdefault(task_id, [e["truth"] for e in entries])
    sols = read_solutions(solutions) if solutions is not None else (truths or None)
    ranked = pool_ranked(rankeds, rank_by)
    submission = make_submission(chal, ranked, fallback)
    output_dir = prepare_output_dir(output_dir)
    write_submission(output_dir / "submission.json", submission)
    metrics: dict[str, Any] = {"evaluations": len(rankeds), "pooled_from": [str(p) for p in prediction_files],
                               "rank_by": rank_by, "tasks": len(chal)}
    if sols:
        sols = {t: v for t, v in sols.items() if t in chal}
        metrics.update({f"ARC/{k}": v for k, v in pass_at_k(ranked, sols)["overall"].items()})
        metrics["kaggle_score"] = score_submission(submission, sols)[0]
    atomic_write_text(output_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    atomic_write_text(output_dir / "predictions.json",
                      json.dumps({"rank_by": rank_by, "select": "votes", "pooled_from": metrics["pooled_from"],
                                  "tasks": _predictions_json(ranked, chal, sols, top)}))
    return metrics


def pool_last_evaluations(eval_root: str | Path, n: int, data_dir: str | Path) -> dict:
    """The trainer's `pool_last_n`: pool the last `n` evaluations under `eval_root` (step_N/predictions.json,
    by step) into `eval_root/step_<last>/pooled_last_<n>/`; the dataset's test_puzzles.json names the tasks."""
    eval_root = Path(eval_root)
    steps = sorted(int(p.parent.name[5:]) for p in eval_root.glob("step_*/predictions.json")
                   if p.parent.name[5:].isdigit())[-n:]
    if not steps:
        raise ValueError(f"no evaluation under {eval_root}")
    files = [eval_root / f"step_{s}" / "predictions.json" for s in steps]
    return write_pooled(files, Path(data_dir) / "test_puzzles.json", eval_root / f"step_{steps[-1]}" /
                        f"pooled_last_{n}")


def main_pool(argv: Sequence[str] | None = None) -> int:
    from trm_core.voting import RANK_RULES

    p = argparse.ArgumentParser(
        prog="trm pool", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Example:\n  trm pool runs/a/eval/predictions.json runs/b/eval/predictions.json \\\n"
                    "      --challenges arc-agi_test_challenges.json --output submission.json\n\n"
                    "Pool the votes of several evaluations (runs, checkpoints, seeds) into one submission.json:\n"
                    "identical grids add their votes, then the best two per test input are the attempts. Each\n"
                    "predictions.json holds its evaluation's top candidates (trm eval --top), so a grid below\n"
                    "that cut counts no votes from that evaluation.")
    p.add_argument("predictions", nargs="+", help="predictions.json files written by trm eval / trm kaggle")
    p.add_argument("--challenges", required=True, help="the challenges file the submission answers")
    p.add_argument("--output", required=True, help="submission.json to write (atomically)")
    p.add_argument("--solutions", default=None, help="known solutions: print the score")
    p.add_argument("--rank-by", choices=RANK_RULES, default="votes_then_q")
    p.add_argument("--fallback", choices=FALLBACKS, default="input")
    p.add_argument("--report-dir", default=None,
                   help="also write the pooled evaluation here (submission.json, predictions.json with the pooled "
                        "votes, metrics.json): `trm report REPORT_DIR` then shows why each attempt was chosen")
    args = p.parse_args(argv)
    try:
        sub = pool_predictions(args.predictions, args.challenges, rank_by=args.rank_by, fallback=args.fallback)
        if args.report_dir:
            write_pooled(args.predictions, args.challenges, args.report_dir, solutions=args.solutions,
                         rank_by=args.rank_by, fallback=args.fallback)
    except ValueError as e:
        print(f"trm pool: {e}", file=sys.stderr)
        return 2
    write_submission(args.output, sub)
    print(f"wrote {args.output} ({len(sub)} tasks, pooled from {len(args.predictions)} evaluations)")
    if args.solutions:
        score, per_task = score_submission(sub, args.solutions)
        print(f"score {score:.4f} ({sum(sum(r) for r in per_task.values())}/"
              f"{sum(len(r) for r in per_task.values())} test outputs)")
    return 0
