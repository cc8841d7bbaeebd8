"""Task selection by rule: a pretraining pool that never touches held-out tasks, and held-out lists drawn by rule.

    # the CPU pretraining pool: ARC-AGI-1 training, ARC-AGI-2 training2 and ConceptARC tasks whose grids fit a
    # 12x12 canvas, minus every task of ARC-AGI-1 evaluation and ARC-AGI-2 evaluation2 (by id and by content)
    trm select-tasks --input-file-prefix data/arc/arc-agi --subsets training training2 concept \\
        --exclude-subsets evaluation evaluation2 --max-side 12 --output data/built/pretrain_pool
    # held-out: ARC-AGI-1 evaluation tasks, every grid <= 10x10, one test input; 10 of them drawn by seed
    trm select-tasks --input-file-prefix data/arc/arc-agi --subsets evaluation --max-side 10 --test-inputs 1 \\
        --sample 10 --seed heldout-v1 --task-list data/heldout/arc1_eval_v1.json

The exclusion rule (why it exists: ARC-AGI-2 training2 ships 376 ARC-AGI-1 evaluation tasks under their own ids,
and ARC-AGI-1 training holds one task whose demonstrations are an evaluation task's): a candidate task is dropped
when its id is the id of any task in an excluded subset, or when any of its grid pairs (a demonstration, or a test
input with its solution) equals a pair of an excluded task. A task id seen in several candidate subsets is kept
once (the first subset listed wins), so ARC-AGI-1 training tasks repeated inside training2 are not counted twice.

The draw: eligible tasks are ranked by sha256(f"{seed}:{task_id}") and the first `sample` are taken. Any seed gives
a list drawn by the same rule, so a score on one list can be checked on lists nobody tuned on.

`--task-list FILE` (one candidate subset) writes a task list instead: the ids, the rule in words and the source
files, which `trm proof`, `trm kaggle --challenges-file` and `load_task_file` read. Otherwise the output is a
challenges/solutions pair in the Kaggle layout (`<output>_challenges.json`,
`<output>_solutions.json`, readable by `trm build-data --challenges`, `trm kaggle`, `trm proof`) and
`<output>_selection.json`, which records the rule, the counts and every dropped id with its reason.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from trm_core.data.arc import Task, TaskError, find_task_files, load_tasks


def _grid_key(grid) -> bytes:
    return bytes(grid.shape) + grid.tobytes()


def task_pairs(task: Task) -> list[bytes]:
    """Hashable keys of every (input, output) grid pair of a task whose output is known."""
    pairs = list(task.train)
    if task.test_outputs is not None:
        pairs += list(zip(task.test_inputs, task.test_outputs))
    return [_grid_key(a) + b"|" + _grid_key(b) for a, b in pairs]


def max_side(task: Task) -> int:
    grids = [g for pair in task.train for g in pair] + task.test_inputs + list(task.test_outputs or [])
    return max(max(g.shape) for g in grids)


def draw_key(seed: str, task_id: str) -> str:
    return hashlib.sha256(f"{seed}:{task_id}".encode()).hexdigest()


def select_tasks(candidates: Sequence[tuple[str, dict[str, Task]]], excluded: Sequence[dict[str, Task]] = (),
                 max_grid_side: int = 30, test_inputs: int | None = None, sample: int | None = None,
                 seed: str = "0", excluded_ids: Sequence[str] = ()) -> tuple[dict[str, Task], dict]:
    """Apply the rule above to (subset name, tasks) candidates; return (kept tasks by id, report).

    `test_inputs` keeps only tasks with exactly that many test inputs; `sample` draws that many by `seed`;
    `excluded_ids` are dropped before the draw (e.g. a reporting list, when drawing a list to tune on).
    """
    listed = set(excluded_ids)
    excluded_ids = {tid for tasks in excluded for tid in tasks}
    excluded_pairs = {key for tasks in excluded for task in tasks.values() for key in task_pairs(task)}
    kept: dict[str, Task] = {}
    dropped: dict[str, dict[str, str]] = {}
    counts: dict[str, int] = {}
    for subset, tasks in candidates:
        counts[subset] = len(tasks)
        for tid, task in tasks.items():
            reason = None
            if tid in kept:
                reason = "duplicate id (kept from an earlier subset)"
            elif tid in excluded_ids:
                reason = "id of an excluded task"
            elif tid in listed:
                reason = "in an excluded task list"
            elif any(key in excluded_pairs for key in task_pairs(task)):
                reason = "shares a grid pair with an excluded task"
            elif max_side(task) > max_grid_side:
                reason = f"a grid side of {max_side(task)} > {max_grid_side}"
            elif test_inputs is not None and len(task.test_inputs) != test_inputs:
                reason = f"{len(task.test_inputs)} test inputs, not {test_inputs}"
            if reason is None:
                kept[tid] = task
            elif tid not in kept:
                dropped.setdefault(subset, {})[tid] = reason
    eligible = len(kept)
    if sample is not None:
        if sample < 1:
            raise ValueError(f"sample must be >= 1, got {sample}")
        kept = {tid: kept[tid] for tid in sorted(kept, key=lambda t: draw_key(seed, t))[:sample]}
    report = {"candidates": counts, "eligible": eligible, "kept": len(kept), "max_grid_side": max_grid_side,
              "test_inputs": test_inputs, "sample": sample, "seed": seed if sample is not None else None,
              "task_ids": sorted(kept), "dropped": dropped}
    return kept, report


def task_to_json(task: Task) -> tuple[dict, list | None]:
    raw = {"train": [{"input": a.tolist(), "output": b.tolist()} for a, b in task.train],
           "test": [{"input": a.tolist()} for a in task.test_inputs]}
    return raw, None if task.test_outputs is None else [g.tolist() for g in task.test_outputs]


def write_selection(kept: dict[str, Task], report: dict, output: str | Path) -> list[Path]:
    """Write `<output>_challenges.json`, `<output>_solutions.json` (if every task has solutions), `_selection.json`."""
    from trm_core.utils import atomic_write_text

    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    challenges, solutions = {}, {}
    for tid in sorted(kept):
        challenges[tid], sol = task_to_json(kept[tid])
        if sol is not None:
            solutions[tid] = sol
    written = [out.with_name(out.name + "_challenges.json")]
    atomic_write_text(written[0], json.dumps(challenges))
    if solutions and len(solutions) == len(challenges):
        written.append(out.with_name(out.name + "_solutions.json"))
        atomic_write_text(written[-1], json.dumps(solutions))
    written.append(out.with_name(out.name + "_selection.json"))
    atomic_write_text(written[-1], json.dumps(report, indent=1))
    return written


def rule_text(report: dict, subset: str) -> str:
    """The selection rule in words, as a task list records it."""
    words = [f"Tasks of {subset}"]
    if report["rule"]["exclude_subsets"]:
        words.append(f"sharing no id and no grid pair with {', '.join(report['rule']['exclude_subsets'])}")
    words.append(f"whose every grid (demonstrations, test inputs and outputs) is at most "
                 f"{report['max_grid_side']}x{report['max_grid_side']}")
    if report["test_inputs"] is not None:
        words.append(f"with exactly {report['test_inputs']} test input(s)")
    if report["rule"].get("exclude_lists"):
        words.append(f"not in {', '.join(report['rule']['exclude_lists'])}")
    text = ", ".join(words) + f": {report['eligible']} eligible."
    if report["sample"] is not None:
        text += (f" The {report['kept']} with the smallest sha256('{report['seed']}:' + task id) were taken; any "
                 "other seed draws another list by the same rule.")
    return text


def write_task_list(report: dict, prefix: str, subset: str, path: str | Path) -> Path:
    from trm_core.utils import atomic_write_text

    challenges, solutions = find_task_files(prefix, subset)
    body = {"rule": rule_text(report, subset), "command": report.get("command"),
            "source": {"challenges": str(challenges), "solutions": str(solutions) if solutions else None},
            "task_ids": report["task_ids"]}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, json.dumps(body, indent=1) + "\n")


def _load_subset(prefix: str, subset: str) -> dict[str, Task]:
    challenges, solutions = find_task_files(prefix, subset)
    tasks, _ = load_tasks(challenges, solutions)
    return tasks


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="trm select-tasks", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Select ARC tasks by rule (exclusions by id and content, grid size, test inputs, seeded draw).\n"
                    "example:\n  trm select-tasks --input-file-prefix data/arc/arc-agi --subsets training training2 "
                    "concept --exclude-subsets evaluation evaluation2 --max-side 12 --output data/built/pretrain_pool")
    p.add_argument("--input-file-prefix", required=True, help="reads {prefix}_{subset}_challenges.json[.gz]")
    p.add_argument("--subsets", nargs="+", required=True, help="candidate subsets, in priority order")
    p.add_argument("--exclude-subsets", nargs="*", default=[], help="subsets no kept task may share an id or pair with")
    p.add_argument("--exclude-lists", nargs="*", default=[], help="task lists whose ids are dropped before the draw")
    p.add_argument("--max-side", type=int, default=30, help="keep tasks whose every grid side is <= this")
    p.add_argument("--test-inputs", type=int, default=None, help="keep tasks with exactly this many test inputs")
    p.add_argument("--sample", type=int, default=None, help="draw this many of the eligible tasks")
    p.add_argument("--seed", default="0", help="draw seed (any string)")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--output", help="output prefix: writes <output>_challenges.json etc.")
    out.add_argument("--task-list", help="write a task list (ids + rule + source files) here; one subset only")
    args = p.parse_args(argv)
    if args.task_list and len(args.subsets) != 1:
        p.error("--task-list takes exactly one candidate subset (its files are the list's source)")
    try:
        candidates = [(s, _load_subset(args.input_file_prefix, s)) for s in args.subsets]
        excluded = [_load_subset(args.input_file_prefix, s) for s in args.exclude_subsets]
        listed = [t for path in args.exclude_lists for t in json.loads(Path(path).read_text())["task_ids"]]
        kept, report = select_tasks(candidates, excluded, args.max_side, args.test_inputs, args.sample, args.seed,
                                    listed)
    except (TaskError, OSError, ValueError, KeyError, TypeError) as e:
        print(f"trm select-tasks: {e}", file=sys.stderr)
        return 2
    report["rule"] = {"subsets": args.subsets, "exclude_subsets": args.exclude_subsets,
                      "exclude_lists": args.exclude_lists,
                      "input_file_prefix": args.input_file_prefix}
    report["command"] = "trm select-tasks " + " ".join(shlex.quote(a) for a in (argv if argv is not None
                                                                                    else sys.argv[2:]))
    if args.task_list:
        print(write_task_list(report, args.input_file_prefix, args.subsets[0], args.task_list))
    else:
        for path in write_selection(kept, report, args.output):
            print(path)
    dropped = {s: len(d) for s, d in report["dropped"].items()}
    print(f"{report['eligible']} eligible, {report['kept']} kept; dropped per subset: {dropped}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
