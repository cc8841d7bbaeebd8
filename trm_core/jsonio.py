"""The input boundary for JSON from users: challenges, solutions, submissions, predictions, task lists.

Every file a user hands to a command is read by `read_json`, which enforces limits before and while parsing
(file size, nesting depth, integer length, duplicate keys), and then checked for the shape its command needs
by one of the `check_*` functions. Anything wrong raises `InputError`, whose message is one line naming the file,
the task, the index and the field:

    sub.json: task 00576224: [0].attempt_1: row 2 has 3 cells, row 0 has 4 (grids must be rectangular)

`trm_core.cli` turns an `InputError` from any subcommand into that line on stderr and exit code 2.

Limits (environment variables override the defaults): TRM_MAX_JSON_BYTES (256 MiB, after gzip decompression),
TRM_MAX_JSON_DEPTH (64 levels of arrays/objects; an ARC file needs 8), TRM_MAX_JSON_INT_DIGITS (20).
"""

from __future__ import annotations

import gzip
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

MAX_GRID_SIDE = 30
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_MAX_DEPTH = 64
DEFAULT_MAX_INT_DIGITS = 20


class InputError(ValueError):
    """A user file that cannot be used; `str()` is one line: `file: task T: index.field: what is wrong`.

    Constructed with a message alone it reads like a plain ValueError (the form `TaskError` has always had).
    """

    def __init__(self, message: str, *, file: str | Path | None = None, task: Any = None, index: Any = None,
                 field: str | None = None) -> None:
        self.message, self.file, self.task, self.index, self.field = message, file, task, index, field
        super().__init__(self._format())

    def _format(self) -> str:
        parts = []
        if self.file is not None:
            parts.append(one_line(str(self.file)))
        if self.task is not None:
            parts.append(f"task {show_id(self.task)}")
        where = location(self.index, self.field)
        if where:
            parts.append(where)
        parts.append(one_line(self.message))
        return ": ".join(parts)

    def at(self, *, file: Any = None, task: Any = None) -> "InputError":
        """This error with the file (and task) filled in where they were not known yet."""
        return InputError(self.message, file=self.file if self.file is not None else file,
                          task=self.task if self.task is not None else task, index=self.index, field=self.field)


def location(index: Any = None, field: str | None = None) -> str:
    """`[0].attempt_1`, `test[1].input`, `[2]`, `attempt_1` or ''."""
    idx = f"[{index}]" if isinstance(index, int) else ("" if index is None else str(index))
    if field:
        return f"{idx}.{field}" if idx else field
    return idx


def one_line(text: str) -> str:
    """Control characters (a newline in a file or task name) shown escaped, so a message stays on one line."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in str(text))


def show_id(task_id: Any) -> str:
    """A task id as it is safe to print: plain when short and printable, else JSON-quoted and cut at 40 chars."""
    text = str(task_id)
    if text.isprintable() and len(text) <= 40 and text.strip() == text and text:
        return text
    return short(text)


def short(value: Any) -> str:
    """A value shown in a message: JSON, cut to 40 characters."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return one_line(text if len(text) <= 40 else text[:37] + "...")


def _limit(name: str, default: int) -> int:
    try:
        return max(1, int(os.environ.get(name, default)))
    except ValueError:
        return default


# ----------------------------------------------------------------------------------------------------------
# Parsing with limits
# ----------------------------------------------------------------------------------------------------------

_STRING_RE = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = np.zeros(256, dtype=np.int8)
_BRACKETS[[ord("["), ord("{")]] = 1
_BRACKETS[[ord("]"), ord("}")]] = -1


def _line_col(data: bytes, pos: int) -> str:
    newline = b"\n"
    line = data.count(newline, 0, pos) + 1
    return f"line {line} column {pos - data.rfind(newline, 0, pos)}"


def _prescan(data: bytes, max_depth: int, max_int_digits: int) -> str | None:
    """Why `data` must not reach json.loads (nesting deeper than max_depth, an integer longer than
    max_int_digits), or None. Strings are blanked first, so brackets and digits inside them do not count."""
    bare = _STRING_RE.sub(lambda m: b'""' + b" " * (len(m.group()) - 2), data)  # same length: positions hold
    codes = np.frombuffer(bare, dtype=np.uint8)
    steps = _BRACKETS[codes]
    where = np.flatnonzero(steps)
    if len(where):
        depth = np.cumsum(steps[where], dtype=np.int64)
        deep = np.flatnonzero(depth > max_depth)
        if len(deep):
            return (f"nesting deeper than {max_depth} levels at {_line_col(data, int(where[deep[0]]))} "
                    "(limit: TRM_MAX_JSON_DEPTH)")
    m = re.search(rb"(?<![\w.+-])-?\d{%d,}(?![\w.])" % (max_int_digits + 1), bare)
    if m:
        return (f"an integer of {len(m.group().lstrip(b'-'))} digits at {_line_col(data, m.start())}, "
                f"more than {max_int_digits} (limit: TRM_MAX_JSON_INT_DIGITS)")
    return None


def _read_bytes(path: Path, max_bytes: int) -> bytes:
    try:
        if path.is_dir():
            raise InputError("is a folder, not a JSON file", file=path)
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                data = f.read(max_bytes + 1)  # bounded: a small .gz cannot inflate into memory without limit
        else:
            if path.stat().st_size > max_bytes:
                raise InputError(f"{path.stat().st_size:,} bytes, more than the limit of {max_bytes:,} "
                                 "(TRM_MAX_JSON_BYTES)", file=path)
            with open(path, "rb") as f:
                data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise InputError("file not found", file=path) from None
    except (OSError, EOFError, gzip.BadGzipFile) as e:  # unreadable, a truncated or corrupt .gz
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__
        raise InputError(f"cannot read it: {reason}", file=path) from None
    if len(data) > max_bytes:
        raise InputError(f"more than the limit of {max_bytes:,} bytes (TRM_MAX_JSON_BYTES)", file=path)
    return data


def loads(data: bytes | str, *, file: str | Path = "<json>", max_depth: int | None = None,
          max_int_digits: int | None = None, tasks_at: tuple[str, ...] | None = ()) -> Any:
    """Parse JSON text with the limits (see `read_json`); raises InputError naming `file` and the position.
    `tasks_at`: the keys leading to the task-id object (() = the top level, None = no tasks in this file),
    so that a duplicated key is reported as a duplicated task id, or inside its task."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    max_depth = max_depth or _limit("TRM_MAX_JSON_DEPTH", DEFAULT_MAX_DEPTH)
    max_int_digits = max_int_digits or _limit("TRM_MAX_JSON_INT_DIGITS", DEFAULT_MAX_INT_DIGITS)
    why = _prescan(data, max_depth, max_int_digits)
    if why:
        raise InputError(f"not accepted as JSON: {why}", file=file)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"not UTF-8 text (byte {e.start}): not a JSON file", file=file) from None
    duplicates: list[tuple[dict, str]] = []

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict:
        out = dict(pairs)
        if len(out) != len(pairs):
            seen: set[str] = set()
            dup = next(k for k, _ in pairs if k in seen or seen.add(k))
            duplicates.append((out, dup))
        return out

    try:
        value = json.loads(text, object_pairs_hook=pairs_hook)
    except json.JSONDecodeError as e:
        raise InputError(f"not readable as JSON: {e.msg} at line {e.lineno} column {e.colno}", file=file) from None
    except (ValueError, RecursionError) as e:  # guarded by the prescan; kept so no parse error escapes as is
        raise InputError(f"not accepted as JSON: {type(e).__name__}: {e}", file=file) from None
    if duplicates:
        obj, key = duplicates[0]
        path = _path_to(value, obj) or []
        n = len(tasks_at) if tasks_at is not None else -1
        if n >= 0 and path == list(tasks_at):
            raise InputError(f"task id {show_id(key)} appears twice (JSON would silently keep the last one)",
                             file=file)
        task = path[n] if n >= 0 and len(path) > n and path[:n] == list(tasks_at) else None
        rest = path[n + 1:] if task is not None else path
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in rest).lstrip(".") or None
        raise InputError(f"key {short(key)} appears twice in one object (JSON would silently keep the last one)",
                         file=file, task=task, index=where)
    return value


def _path_to(root: Any, target: Any) -> list | None:
    """The keys/indices leading from `root` to the object `target` (by identity), found without recursion."""
    stack: list[tuple[Any, list]] = [(root, [])]
    while stack:
        node, path = stack.pop()
        if node is target:
            return path
        if isinstance(node, dict):
            stack.extend((v, path + [k]) for k, v in node.items() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend((v, path + [i]) for i, v in enumerate(node) if isinstance(v, (dict, list)))
    return None


def read_json(path: str | Path, *, max_bytes: int | None = None, max_depth: int | None = None,
              max_int_digits: int | None = None, tasks_at: tuple[str, ...] | None = ()) -> Any:
    """Read a user's JSON file (plain or .gz) with limits: size, nesting depth, integer digits; duplicate keys
    are an error (plain json keeps the last silently). Raises InputError naming the file and the position."""
    path = Path(path)
    data = _read_bytes(path, max_bytes or _limit("TRM_MAX_JSON_BYTES", DEFAULT_MAX_BYTES))
    return loads(data, file=path, max_depth=max_depth, max_int_digits=max_int_digits, tasks_at=tasks_at)


# ----------------------------------------------------------------------------------------------------------
# Shapes
# ----------------------------------------------------------------------------------------------------------

def grid_problem(value: Any) -> str | None:
    """Why `value` is not an ARC grid (a rectangular list of 1..30 rows of 1..30 ints 0..9), or None."""
    if not isinstance(value, list) or not value:
        return f"must be a non-empty list of rows, got {short(value)}"
    for i, row in enumerate(value):
        if not isinstance(row, list):
            return f"row {i} must be a list of ints, got {short(row)}"
    width = len(value[0])
    for i, row in enumerate(value):
        if len(row) != width:
            return f"row {i} has {len(row)} cells, row 0 has {width} (grids must be rectangular)"
    if not (1 <= len(value) <= MAX_GRID_SIDE and 1 <= width <= MAX_GRID_SIDE):
        return f"grid is {len(value)}x{width}; each side must be 1..{MAX_GRID_SIDE}"
    for r, row in enumerate(value):
        for c, x in enumerate(row):
            if type(x) is not int or not 0 <= x <= 9:  # `type is` rejects bool, an int subclass
                return f"cell [{r}][{c}] is {short(x)}; cells must be ints 0..9"
    return None


def check_grid(value: Any, *, file: Any = None, task: Any = None, index: Any = None,
               field: str | None = None) -> list:
    why = grid_problem(value)
    if why:
        raise InputError(why, file=file, task=task, index=index, field=field)
    return value


def _top_object(data: Any, file: Any, what: str) -> Mapping:
    if not isinstance(data, dict):
        raise InputError(f"top level must be a JSON object mapping {what}, got {type(data).__name__}", file=file)
    return data


def _looks_like_challenges(task: Any) -> bool:
    return isinstance(task, dict) and ("train" in task or "test" in task)


def check_challenges(data: Any, file: Any = "challenges", *, need_inputs: bool = True) -> dict:
    """A challenges file: task id -> {"test": [{"input": grid}, ...], "train": [...]?}. `"test": []` is a task
    with no test input (its submission entry is []). With `need_inputs`, every test input must be a grid."""
    data = _top_object(data, file, "task id -> task")
    for task_id, task in data.items():
        if isinstance(task, list):
            raise InputError("must be an object with 'train' and 'test', got a list (is this a solutions file? "
                             "it maps task id -> list of output grids)", file=file, task=task_id)
        if not isinstance(task, dict):
            raise InputError(f"must be an object with 'train' and 'test', got {short(task)}", file=file,
                             task=task_id)
        if "test" not in task:
            raise InputError("missing (a task needs a 'test' list of {\"input\": grid})", file=file,
                             task=task_id, field="test")
        tests = task["test"]
        if not isinstance(tests, list):
            raise InputError(f"must be a list of {{\"input\": grid}}, got {short(tests)}", file=file,
                             task=task_id, field="test")
        for i, pair in enumerate(tests):
            if not isinstance(pair, dict):
                raise InputError(f"must be an object with 'input', got {short(pair)}", file=file, task=task_id,
                                 index=f"test[{i}]")
            if need_inputs:
                if "input" not in pair:
                    raise InputError("missing", file=file, task=task_id, index=f"test[{i}]", field="input")
                check_grid(pair["input"], file=file, task=task_id, index=f"test[{i}]", field="input")
    return data


def check_solutions(data: Any, file: Any = "solutions") -> dict:
    """A solutions file: task id -> [output grid per test input]. A challenges file passed instead is named."""
    data = _top_object(data, file, "task id -> list of output grids")
    for task_id, outputs in data.items():
        if _looks_like_challenges(outputs):
            raise InputError(f"holds {sorted(k for k in ('train', 'test') if k in outputs)}: this is a challenges "
                             "file, not a solutions file (task id -> list of output grids)", file=file, task=task_id)
        if not isinstance(outputs, list):
            raise InputError(f"must be a list of output grids (one per test input), got {short(outputs)}",
                             file=file, task=task_id)
        for i, grid in enumerate(outputs):
            check_grid(grid, file=file, task=task_id, index=i)
    return data


def check_submission_object(data: Any, file: Any = "submission") -> dict:
    """Only the top level of a submission: task id -> list (entries are judged by `validate_submission`)."""
    if isinstance(data, dict) and data:
        if all(_looks_like_challenges(t) for t in data.values()):
            raise InputError("this is a challenges file, not a submission (task id -> [{attempt_1, attempt_2}])",
                             file=file)
        if all(isinstance(v, list) and v and all(isinstance(g, list) for g in v) for v in data.values()):
            raise InputError("this looks like a solutions file (task id -> output grids), not a submission "
                             "(task id -> [{attempt_1, attempt_2}])", file=file)
    return _top_object(data, file, "task id -> [{\"attempt_1\": grid, \"attempt_2\": grid}, ...]")


def check_predictions(data: Any, file: Any = "predictions.json") -> dict:
    """A predictions.json written by `trm eval`: {"rank_by": str, "tasks": {task id: [{"input": grid,
    "truth": grid or null, "candidates": [{"grid": grid, "votes": int >= 0, "mean_q": number}]}]}}; rescored
    candidates may also hold "logprob" (number or null), "views" and "tokens" (ints >= 0), "scores", "ranks"."""
    data = _top_object(data, file, "'rank_by' and 'tasks'")
    if "rank_by" in data and not isinstance(data["rank_by"], str):
        raise InputError(f"must be a string, got {short(data['rank_by'])}", file=file, field="rank_by")
    tasks = data.get("tasks")
    if not isinstance(tasks, dict):
        raise InputError(f"must be an object task id -> list of test inputs, got {short(tasks)} (is this a "
                         "predictions.json written by trm eval?)", file=file, field="tasks")
    for task_id, tests in tasks.items():
        if not isinstance(tests, list):
            raise InputError(f"must be a list (one entry per test input), got {short(tests)}", file=file,
                             task=task_id)
        for i, test in enumerate(tests):
            if not isinstance(test, dict):
                raise InputError(f"must be an object with input and candidates, got {short(test)}", file=file,
                                 task=task_id, index=i)
            if "input" not in test:
                raise InputError("missing", file=file, task=task_id, index=i, field="input")
            check_grid(test["input"], file=file, task=task_id, index=i, field="input")
            if test.get("truth") is not None:
                check_grid(test["truth"], file=file, task=task_id, index=i, field="truth")
            cands = test.get("candidates", [])
            if not isinstance(cands, list):
                raise InputError(f"must be a list, got {short(cands)}", file=file, task=task_id, index=i,
                                 field="candidates")
            for r, c in enumerate(cands):
                where = f"[{i}].candidates[{r}]"
                if not isinstance(c, dict):
                    raise InputError(f"must be an object with grid, votes and mean_q, got {short(c)}", file=file,
                                     task=task_id, index=where)
                if "grid" not in c:
                    raise InputError("missing", file=file, task=task_id, index=where, field="grid")
                check_grid(c["grid"], file=file, task=task_id, index=where, field="grid")
                votes, q = c.get("votes"), c.get("mean_q")
                if type(votes) is not int or votes < 0:
                    raise InputError(f"must be an int >= 0, got {short(votes)}", file=file, task=task_id,
                                     index=where, field="votes")
                if type(q) not in (int, float) or q != q:
                    raise InputError(f"must be a number, got {short(q)}", file=file, task=task_id, index=where,
                                     field="mean_q")
                # Likelihood fields (files written with a rescoring rule, trm_core.rescore): optional.
                lp = c.get("logprob")
                if lp is not None and (type(lp) not in (int, float) or lp != lp):
                    raise InputError(f"must be a number or null, got {short(lp)}", file=file, task=task_id,
                                     index=where, field="logprob")
                for key in ("views", "tokens"):
                    if key in c and (type(c[key]) is not int or c[key] < 0):
                        raise InputError(f"must be an int >= 0, got {short(c[key])}", file=file, task=task_id,
                                         index=where, field=key)
    return data


def check_metrics(data: Any, file: Any = "metrics.json") -> dict:
    return _top_object(data, file, "metric name -> value")


def check_task_list(data: Any, file: Any = "task list") -> dict:
    """A task list (data/proof_tasks.json): {"task_ids": [str, ...], "source": {"challenges": path,
    "solutions": path?}, "rule": ...}."""
    ids, source = data.get("task_ids"), data.get("source")
    if not isinstance(ids, list) or not all(isinstance(t, str) for t in ids):
        raise InputError(f"must be a list of task id strings, got {short(ids)}", file=file, field="task_ids")
    if len(set(ids)) != len(ids):
        dup = next(t for i, t in enumerate(ids) if t in ids[:i])
        raise InputError(f"task id {show_id(dup)} is listed twice", file=file, field="task_ids")
    if not isinstance(source, dict) or not isinstance(source.get("challenges"), str):
        raise InputError(f"must be an object with a 'challenges' path, got {short(source)}", file=file,
                         field="source")
    if source.get("solutions") is not None and not isinstance(source["solutions"], str):
        raise InputError(f"must be a path, got {short(source['solutions'])}", file=file, field="source.solutions")
    return data


def check_task_ids(data: Mapping, file: Any) -> None:
    """Task ids must be non-empty and free of `|||`, the separator of augmented-puzzle names
    (`task|||t3|||0123456789`): an id holding it would be parsed as an augmentation and lose its votes."""
    for task_id in data:
        if not task_id:
            raise InputError("an empty task id", file=file)
        if "|||" in task_id:
            raise InputError("task ids must not contain '|||' (the separator of augmented puzzle names)",
                             file=file, task=task_id)
