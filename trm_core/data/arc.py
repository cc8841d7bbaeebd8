"""ARC task files: loading and validation.

Kaggle lays ARC out as `{prefix}_{subset}_challenges.json` (task id -> {"train": [{"input", "output"}, ...],
"test": [{"input"}, ...]}) plus an optional `{prefix}_{subset}_solutions.json` (task id -> [output grid per test
input]); either may be gzipped. `load_tasks` reads both and checks every task, so a malformed task fails here
with a message naming the file, task id, pair and field, not deep inside the builder:

    tasks, problems = load_tasks("data/arc/arc-agi_evaluation2_challenges.json.gz",
                                 "data/arc/arc-agi_evaluation2_solutions.json.gz")
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trm_core.jsonio import InputError, check_task_list, read_json

MAX_GRID_SIDE = 30


@dataclass
class Task:
    """One ARC task; every grid is a 2-D uint8 array of colours 0..9."""

    task_id: str
    train: list[tuple[np.ndarray, np.ndarray]]
    test_inputs: list[np.ndarray]
    test_outputs: list[np.ndarray] | None  # None when no solutions are known (e.g. the Kaggle test file)
    # Upstream's builder lists a task's pairs in the file's key order; "test" before "train" is rare but legal.
    test_before_train: bool = False
    # With load_tasks(keep_raw=True): the task's JSON entry and its solutions entry (None without a solutions
    # file), untouched, for writing test_puzzles.json exactly as upstream does.
    raw: dict | None = None
    raw_solution: Any = None


# A malformed task file or task; the message names the file, task id, pair and field. The one error type of the
# input boundary (trm_core.jsonio), under the name this module has always raised.
TaskError = InputError


def load_challenges_json(path: str | Path) -> dict:
    """Read a challenges or solutions file (plain or gzipped JSON) and return the raw top-level dict.

    Read through the input boundary: size, depth and integer limits, and a task id that appears twice is an
    error (plain JSON would keep the last one silently)."""
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict):
        raise TaskError(f"{path.name}: top level must be a JSON object mapping task id -> task, "
                        f"got {type(data).__name__}")
    return data


def find_task_files(prefix: str, subset: str) -> tuple[Path, Path | None]:
    """Return (challenges, solutions or None) for `{prefix}_{subset}_{challenges,solutions}.json[.gz]`."""
    def first_existing(kind: str) -> Path | None:
        for suffix in (".json", ".json.gz"):
            p = Path(f"{prefix}_{subset}_{kind}{suffix}")
            if p.is_file():
                return p
        return None

    challenges = first_existing("challenges")
    if challenges is None:
        raise TaskError(f"no challenges file for subset {subset!r}: looked for "
                        f"{prefix}_{subset}_challenges.json and {prefix}_{subset}_challenges.json.gz")
    return challenges, first_existing("solutions")


def _grid(value: Any) -> np.ndarray:
    """Convert one JSON grid to uint8, raising ValueError with a short reason if it is not a valid ARC grid."""
    if not isinstance(value, list) or not value:
        raise ValueError(f"must be a non-empty list of rows, got {_short(value)}")
    if not all(isinstance(row, list) for row in value):
        i = next(i for i, row in enumerate(value) if not isinstance(row, list))
        raise ValueError(f"row {i} must be a list of ints, got {_short(value[i])}")
    widths = [len(row) for row in value]
    for i, w in enumerate(widths):
        if w != widths[0]:
            raise ValueError(f"row {i} has {w} cells, row 0 has {widths[0]} (grids must be rectangular)")
    h, w = len(value), widths[0]
    if not (1 <= h <= MAX_GRID_SIDE and 1 <= w <= MAX_GRID_SIDE):
        raise ValueError(f"grid is {h}x{w}; each side must be 1..{MAX_GRID_SIDE}")
    for r, row in enumerate(value):
        for c, x in enumerate(row):
            if type(x) is not int or not 0 <= x <= 9:  # `type is` rejects bool, which is an int subclass
                raise ValueError(f"cell [{r}][{c}] is {_short(x)}; cells must be ints 0..9")
    return np.array(value, dtype=np.uint8)


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, (bytes, bytearray)) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _parse_task(task_id: str, raw: Any, solutions: Any, has_solutions: bool) -> Task:
    """Validate one task; raises ValueError("<pair>.<field>: <reason>")."""
    if "|||" in task_id:  # the separator of augmented names: the original's name would parse as an augmentation
        raise ValueError("task ids must not contain '|||' (the separator of augmented puzzle names)")
    if not isinstance(raw, dict):
        raise ValueError(f"task must be an object with 'train' and 'test', got {_short(raw)}")
    for split in ("train", "test"):
        if not isinstance(raw.get(split), list) or not raw[split]:
            raise ValueError(f"{split}: must be a non-empty list of pairs, got {_short(raw.get(split))}")

    def field(split: str, i: int, name: str) -> np.ndarray:
        pair = raw[split][i]
        if not isinstance(pair, dict):
            raise ValueError(f"{split}[{i}]: must be an object, got {_short(pair)}")
        if name not in pair:
            raise ValueError(f"{split}[{i}].{name}: missing")
        try:
            return _grid(pair[name])
        except ValueError as e:
            raise ValueError(f"{split}[{i}].{name}: {e}") from None

    train = [(field("train", i, "input"), field("train", i, "output")) for i in range(len(raw["train"]))]
    test_inputs = [field("test", i, "input") for i in range(len(raw["test"]))]
    test_outputs = None
    if has_solutions:
        if not isinstance(solutions, list):
            raise ValueError(f"test[0].solution: missing (the solutions file has no list for this task, "
                             f"got {_short(solutions)})")
        if len(solutions) != len(test_inputs):
            raise ValueError(f"test[{min(len(solutions), len(test_inputs))}].solution: the solutions file has "
                             f"{len(solutions)} grids for {len(test_inputs)} test inputs")
        test_outputs = []
        for i, sol in enumerate(solutions):
            try:
                test_outputs.append(_grid(sol))
            except ValueError as e:
                raise ValueError(f"test[{i}].solution: {e}") from None
    elif all(isinstance(p, dict) and "output" in p for p in raw["test"]):
        # Original-ARC-style files carry test outputs inline; use them when there is no solutions file.
        test_outputs = [field("test", i, "output") for i in range(len(raw["test"]))]
    keys = list(raw)
    return Task(task_id, train, test_inputs, test_outputs, test_before_train=keys.index("test") < keys.index("train"))


def load_tasks(challenges: str | Path, solutions: str | Path | None = None, *,
               skip_invalid: bool = False, keep_raw: bool = False) -> tuple[dict[str, Task], list[str]]:
    """Load and validate every task of a challenges file (and its solutions, if given).

    Returns (tasks in file order, problems). A problem is one line naming file, task id, pair and field; it
    raises TaskError at the first one unless `skip_invalid`, which reports the task in `problems` and skips it.
    `keep_raw` also keeps each task's JSON entries (`Task.raw`, `Task.raw_solution`).
    """
    challenges = Path(challenges)
    raw_tasks = load_challenges_json(challenges)
    raw_solutions = load_challenges_json(solutions) if solutions is not None else None
    return parse_tasks(raw_tasks, raw_solutions, skip_invalid=skip_invalid, keep_raw=keep_raw, name=challenges.name,
                       solutions_name=Path(solutions).name if solutions is not None else "solutions")


def parse_tasks(raw_tasks: dict, raw_solutions: dict | None = None, *, skip_invalid: bool = False,
                keep_raw: bool = False, name: str = "challenges",
                solutions_name: str = "solutions") -> tuple[dict[str, Task], list[str]]:
    """`load_tasks` for challenges (and solutions) already read; `name` and `solutions_name` head the messages."""
    tasks: dict[str, Task] = {}
    problems: list[str] = []
    for task_id, raw in raw_tasks.items():
        try:
            sol = raw_solutions.get(task_id) if raw_solutions is not None else None
            tasks[task_id] = _parse_task(task_id, raw, sol, raw_solutions is not None)
            if keep_raw:
                tasks[task_id].raw, tasks[task_id].raw_solution = raw, sol
        except ValueError as e:
            where = solutions_name if str(e).split(":", 1)[0].endswith(".solution") else name
            message = f"{where}: task {task_id}: {e}"
            if not skip_invalid:
                raise TaskError(message) from None
            problems.append(message)
    return tasks, problems


def find_challenges(data_dir: str | Path) -> Path:
    """`arc-agi_test_challenges.json[.gz]` in `data_dir` or below it (Kaggle nests some competitions)."""
    data_dir = Path(data_dir)
    for pattern in ("arc-agi_test_challenges.json", "arc-agi_test_challenges.json.gz"):
        if (data_dir / pattern).is_file():
            return data_dir / pattern
        found = sorted(data_dir.rglob(pattern))
        if found:
            return found[0]
    found = sorted(data_dir.rglob("*test_challenges.json*"))
    if found:
        return found[0]
    raise FileNotFoundError(f"no arc-agi_test_challenges.json under {data_dir} (set data_dir or challenges_file)")


def is_task_list(raw: Any) -> bool:
    """A task list (e.g. data/proof_tasks.json): {"task_ids": [...], "source": {"challenges", "solutions"}}."""
    return isinstance(raw, dict) and "task_ids" in raw and "source" in raw


def _resolve_listed(path: str, base: Path) -> Path:
    """A path from a task list: as given if it exists (relative to the cwd), else relative to the list."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    for root in (base, base.parent):
        if (root / p).exists():
            return root / p
    return p


def load_task_file(tasks: str | Path, solutions: str | Path | None = None, *,
                   require_solutions: bool = True) -> tuple[dict, dict, dict]:
    """Read a challenges file or a task list (ids + source files + the rule that chose them).

    Returns (challenges, solutions, info): raw challenges {task_id: {"train", "test"}} in order, solutions
    {task_id: [output grid per test input]} (from `solutions`, the list's source, or `output`s written in the
    test pairs), and info (the file, and a list's rule and source). With `require_solutions`, a task without test
    outputs is an error; otherwise it is left out of the solutions.
    """
    tasks = Path(tasks)
    raw = load_challenges_json(tasks)
    info: dict[str, Any] = {"tasks_file": str(tasks)}
    if is_task_list(raw):
        check_task_list(raw, tasks.name)
        base, src = tasks.parent, raw["source"]
        chal_all = load_challenges_json(_resolve_listed(src["challenges"], base))
        sol_file = solutions or (_resolve_listed(src["solutions"], base) if src.get("solutions") else None)
        sol_all = load_challenges_json(sol_file) if sol_file else {}
        missing = [t for t in raw["task_ids"] if t not in chal_all]
        if missing:
            raise TaskError(f"{tasks.name}: task ids {missing} are not in {src['challenges']}")
        challenges = {t: chal_all[t] for t in raw["task_ids"]}
        info.update(rule=raw.get("rule"), source=src)
    else:
        challenges = raw
        sol_all = load_challenges_json(solutions) if solutions else {}
    sols = {}
    for t, task in challenges.items():
        if t in sol_all:
            sols[t] = sol_all[t]
        elif isinstance(task, dict) and isinstance(task.get("test"), list) and task["test"] and \
                all(isinstance(p, dict) and "output" in p for p in task["test"]):
            sols[t] = [p["output"] for p in task["test"]]
        elif require_solutions:
            raise TaskError(f"{tasks.name}: task {t}: no test outputs (pass a solutions file or put 'output' in "
                            "its test pairs)")
    return challenges, sols, info
