"""The shared bad-input corpus: files an attacker (or an accident) hands to trm, and where each must be reported.

`generic_cases()` are broken for any JSON input (missing, empty, truncated, binary, 5,000-deep nesting, a 5,000
digit integer, a duplicated task id, a folder, a corrupt .gz, ...); the `*_cases()` functions are broken for
one kind of file (challenges, solutions, submission, predictions, metrics, task list, checkpoint, config).
Each case is `Case(name, write, where)`: `write(path)` puts the bad content at `path` (or leaves it absent),
and every string of `where` must appear in the one-line error (the file, the task, the index, the field).
`tests/test_bad_input.py` runs every subcommand that reads a user file against the cases of its kind.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

GOOD_GRID = [[1, 2], [3, 4]]
GOOD_CHALLENGES = {"t1": {"train": [{"input": GOOD_GRID, "output": GOOD_GRID}], "test": [{"input": GOOD_GRID}]},
                   "t2": {"train": [{"input": [[5]], "output": [[6]]}], "test": [{"input": [[7]]}, {"input": [[8]]}]}}
GOOD_SOLUTIONS = {"t1": [GOOD_GRID], "t2": [[[6]], [[6]]]}
GOOD_SUBMISSION = {"t1": [{"attempt_1": GOOD_GRID, "attempt_2": [[0]]}],
                   "t2": [{"attempt_1": [[6]], "attempt_2": [[7]]}, {"attempt_1": [[8]], "attempt_2": [[6]]}]}
GOOD_PREDICTIONS = {"rank_by": "votes_then_q", "tasks": {
    "t1": [{"input": GOOD_GRID, "truth": GOOD_GRID, "candidates": [{"grid": GOOD_GRID, "votes": 3, "mean_q": 0.5}]}],
    "t2": [{"input": [[7]], "truth": None, "candidates": []}, {"input": [[8]], "truth": None, "candidates": []}]}}


@dataclass
class Case:
    name: str
    write: Callable[[Path], None]
    where: tuple[str, ...] = ()  # besides the file name, which every message must hold
    exit_code: int = 2
    mentions_file: bool = True


def text(content: str | bytes) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = content.encode() if isinstance(content, str) else content
        if path.name.endswith(".gz"):
            data = gzip.compress(data)
        path.write_bytes(data)
    return write


def as_json(obj: Any) -> Callable[[Path], None]:
    return text(json.dumps(obj))


def edited(base: Any, edit: Callable[[Any], None]) -> Callable[[Path], None]:
    obj = json.loads(json.dumps(base))
    edit(obj)
    return as_json(obj)


def absent(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)


def folder(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


def corrupt_gz(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(b'{"t1": {"test": []}}')[:-12])  # truncated deflate stream


def generic_cases(good: Any) -> list[Case]:
    """Broken for any JSON input; `good` is a valid content of the slot (cut short for the truncated case)."""
    return [
        Case("missing", absent, ("not found",)),
        Case("empty", text(""), ("not readable as JSON",)),
        Case("truncated", text(json.dumps(good)[:-7]), ("not readable as JSON", "line 1")),
        Case("binary", text(b"\x89PNG\r\n\x1a\n\xff\xfe\x00garbage"), ("not UTF-8",)),
        Case("deep_nesting", text("[" * 5000 + "]" * 5000), ("nesting deeper than",)),
        Case("huge_integer_in_a_grid", text('{"t1": {"test": [{"input": [[1' + "0" * 5000 + "]]}]}}"),
             ("5001 digits",)),
        Case("huge_integer_anywhere", text('{"x": [' + "9" * 5000 + "]}"), ("5000 digits",)),
        Case("duplicated_key", text('{"t1": [], "t1": []}'), ("t1", "appears twice")),
        Case("a_folder", folder, ("is a folder",)),
        Case("nan_and_garbage", text("NaN garbage"), ("not readable as JSON",)),
    ]


def gz_cases() -> list[Case]:
    return [Case("corrupt_gz", corrupt_gz, ("cannot read it",))]


def top_level_cases(what: str) -> list[Case]:
    return [Case("top_level_list", text("[1, 2, 3]"), ("top level must be a JSON object", what)),
            Case("top_level_null", text("null"), ("top level must be a JSON object",)),
            Case("top_level_string", text('"t1"'), ("top level must be a JSON object",))]


def challenges_cases(need_inputs: bool) -> list[Case]:
    cases = top_level_cases("task id -> task") + [
        Case("duplicated_task_id", text('{"t1": {"test": []}, "t2": {"test": []}, "t1": {"test": []}}'),
             ("task id t1 appears twice",)),
        Case("null_task", as_json({"t1": None}), ("task t1", "got null")),
        Case("list_task", as_json({"t1": [GOOD_GRID]}), ("task t1", "solutions file")),
        Case("string_task", as_json({"t1": "oops"}), ("task t1", '"oops"')),
        Case("task_without_test", as_json({"t1": {"train": []}}), ("task t1", "test: missing")),
        Case("test_not_a_list", as_json({"t1": {"test": 7}}), ("task t1", "test:")),
        Case("test_pair_not_an_object", as_json({"t1": {"test": [[1]]}}), ("task t1", "test[0]")),
        Case("duplicated_key_inside_a_task",
             text('{"t1": {"test": [{"input": [[1]], "input": [[2]]}]}}'), ("task t1", "test[0]", '"input"')),
    ]
    if need_inputs:
        cases += [
            Case("colour_300", as_json({"t1": {"test": [{"input": [[1, 300]]}]}}),
                 ("task t1", "test[0].input", "cell [0][1] is 300")),
            Case("ragged_grid", as_json({"t1": {"test": [{"input": [[1, 2], [3]]}]}}),
                 ("task t1", "test[0].input", "row 1 has 1 cells")),
            Case("bool_cell", as_json({"t1": {"test": [{"input": [[True]]}]}}), ("task t1", "cell [0][0] is true")),
            Case("31_columns", as_json({"t1": {"test": [{"input": [[0] * 31]}]}}), ("task t1", "1x31")),
            Case("missing_input", as_json({"t1": {"test": [{"output": GOOD_GRID}]}}), ("task t1", "test[0].input")),
        ]
    return cases


def solutions_cases() -> list[Case]:
    return top_level_cases("task id -> list of output grids") + [
        Case("challenges_passed_as_solutions", as_json(GOOD_CHALLENGES), ("task t1", "challenges file")),
        Case("task_not_a_list", as_json({"t1": {"x": 1}}), ("task t1", "list of output grids")),
        Case("ragged_truth", as_json({"t1": [[[1, 2], [3]]]}), ("task t1", "[0]", "row 1 has 1 cells")),
        Case("colour_300_truth", as_json({"t1": [[[300]]]}), ("task t1", "[0]", "300")),
        Case("empty_grid", as_json({"t1": [[]]}), ("task t1", "[0]", "non-empty")),
    ]


def submission_cases() -> list[Case]:
    return top_level_cases("task id ->") + [
        Case("challenges_passed_as_submission", as_json(GOOD_CHALLENGES), ("challenges file",)),
        Case("solutions_passed_as_submission", as_json(GOOD_SOLUTIONS), ("solutions file",)),
    ]


def predictions_cases() -> list[Case]:
    P = GOOD_PREDICTIONS
    return top_level_cases("'rank_by' and 'tasks'") + [
        Case("no_tasks", as_json({"rank_by": "votes"}), ("tasks:",)),
        Case("duplicated_task_id", text('{"tasks": {"t1": [], "t1": []}}'), ("task id t1 appears twice",)),
        Case("tasks_is_a_list", as_json({"tasks": []}), ("tasks:",)),
        Case("rank_by_not_a_string", edited(P, lambda p: p.update(rank_by=5)), ("rank_by",)),
        Case("task_not_a_list", edited(P, lambda p: p["tasks"].update(t1={"x": 1})), ("task t1",)),
        Case("test_not_an_object", edited(P, lambda p: p["tasks"]["t1"].__setitem__(0, 5)), ("task t1", "[0]")),
        Case("missing_input", edited(P, lambda p: p["tasks"]["t1"][0].pop("input")), ("task t1", "[0].input")),
        Case("colour_300_in_a_candidate",
             edited(P, lambda p: p["tasks"]["t1"][0]["candidates"][0].update(grid=[[300]])),
             ("task t1", "[0].candidates[0].grid", "cell [0][0] is 300")),
        Case("negative_votes", edited(P, lambda p: p["tasks"]["t1"][0]["candidates"][0].update(votes=-1)),
             ("task t1", "[0].candidates[0].votes")),
        Case("string_mean_q", edited(P, lambda p: p["tasks"]["t1"][0]["candidates"][0].update(mean_q="high")),
             ("task t1", "[0].candidates[0].mean_q")),
        Case("candidate_without_grid", edited(P, lambda p: p["tasks"]["t1"][0]["candidates"][0].pop("grid")),
             ("task t1", "[0].candidates[0].grid")),
        Case("candidates_not_a_list", edited(P, lambda p: p["tasks"]["t1"][0].update(candidates={})),
             ("task t1", "[0].candidates")),
        Case("ragged_truth", edited(P, lambda p: p["tasks"]["t1"][0].update(truth=[[1], [2, 3]])),
             ("task t1", "[0].truth", "row 1 has 2 cells")),
    ]


def task_list_cases(challenges_path: str) -> list[Case]:
    src = {"challenges": challenges_path}
    return [
        Case("task_ids_not_a_list", as_json({"task_ids": "t1", "source": src}), ("task_ids",)),
        Case("task_id_listed_twice", as_json({"task_ids": ["t1", "t1"], "source": src}), ("task_ids", "t1")),
        Case("source_not_an_object", as_json({"task_ids": ["t1"], "source": "x.json"}), ("source",)),
        Case("unknown_task_id", as_json({"task_ids": ["zz9"], "source": src}), ("zz9",)),
    ]


def checkpoint_cases() -> list[Case]:
    import io

    import torch

    buf = io.BytesIO()
    torch.save({"w": torch.zeros(64, 64)}, buf)
    return [
        Case("missing", absent, ("no such checkpoint",)),
        Case("empty", text(b""), ("cannot read",)),
        Case("truncated", text(buf.getvalue()[:300]), ("cannot read",)),
        Case("random_bytes", text(bytes(range(256)) * 8), ("cannot read",)),
        Case("a_json_file", as_json({"model": [1, 2]}), ("cannot read",)),
        Case("a_folder_without_weights", folder, ("neither model.pt nor step_N",)),
        Case("weights_without_a_model", text(buf.getvalue()), ()),
    ]


def config_cases() -> list[Case]:
    return [
        Case("missing", absent, ("no such config file",)),
        Case("deep_yaml", text("a: " + "[" * 5000 + "]" * 5000 + "\n"), ()),
        Case("not_a_mapping", text("- 1\n- 2\n"), ("expected a mapping",)),
        Case("broken_yaml", text("a: [1, 2\n"), ("not valid YAML",)),
        Case("unknown_key", text("no_such_setting: 1\n"), ("no_such_setting",)),
        Case("huge_integer", text("global_batch_size: " + "9" * 5000 + "\n"), ()),
    ]


@dataclass
class Slot:
    """One place a subcommand reads a user file: the cases for it and how to build the command around it."""

    command: str
    kind: str
    argv: Callable[[Path, Path], list[str]]  # (bad file, work folder) -> argv after `trm`
    cases: list[Case] = field(default_factory=list)
    suffix: str = ".json"
