"""The bad-input corpus (tests/bad_input_corpus.py) against every subcommand that reads a user file or writes a path.

For each (subcommand, file slot, bad case): `trm` runs in-process, exits with the case's code (2: one line on
stderr; 1 for `trm validate`'s verdict on a submission it could read), prints no traceback, and the line names
the file and, where the case has one, the task, index and field. Two cases also run as real processes, to show
that nothing reaches the terminal but that one line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import bad_input_corpus as corpus
from bad_input_corpus import (GOOD_CHALLENGES, GOOD_PREDICTIONS, GOOD_SOLUTIONS, GOOD_SUBMISSION, Case, Slot,
                              as_json)
from trm_core.cli import main as trm

ROOT = Path(__file__).resolve().parent.parent


def loose(cases: list[Case]) -> list[Case]:
    """The cases with only their task named (for readers with their own wording, e.g. the dataset builder)."""
    return [Case(c.name, c.write, tuple(w for w in c.where if w.startswith("task ") and "->" not in w), c.exit_code)
            for c in cases]


def as_verdict(cases: list[Case]) -> list[Case]:
    """`trm validate` reads these submissions fine and judges them: exit 1, the problem on stdout."""
    return [Case(c.name, c.write, c.where, 1) for c in cases]


def without(cases: list[Case], *names: str) -> list[Case]:
    return [c for c in cases if c.name not in names]


def generic(good) -> list[Case]:
    return corpus.generic_cases(good)


def files(w: Path) -> dict[str, Path]:
    """Good inputs beside the bad one."""
    out = {"challenges": w / "arc-agi_good_challenges.json", "solutions": w / "good_solutions.json",
           "submission": w / "good_submission.json", "predictions": w / "goodrun" / "predictions.json"}
    for key, obj in (("challenges", GOOD_CHALLENGES), ("solutions", GOOD_SOLUTIONS), ("submission", GOOD_SUBMISSION),
                     ("predictions", GOOD_PREDICTIONS)):
        out[key].parent.mkdir(parents=True, exist_ok=True)
        out[key].write_text(json.dumps(obj))
    return out


SLOTS = [
    Slot("validate", "challenges", lambda b, w: ["validate", str(files(w)["submission"]), str(b)],
         generic(GOOD_CHALLENGES) + corpus.gz_cases() + corpus.challenges_cases(need_inputs=False)),
    Slot("validate", "submission", lambda b, w: ["validate", str(b), str(files(w)["challenges"])],
         generic(GOOD_SUBMISSION) + as_verdict(corpus.submission_cases())),
    Slot("score", "submission", lambda b, w: ["score", str(b), str(files(w)["solutions"])],
         generic(GOOD_SUBMISSION) + corpus.submission_cases()),
    Slot("score", "solutions", lambda b, w: ["score", str(files(w)["submission"]), str(b)],
         generic(GOOD_SOLUTIONS) + corpus.gz_cases() + corpus.solutions_cases()),
    Slot("report", "predictions", lambda b, w: ["report", str(b.parent), "--out", str(w / "r.html")],
         generic(GOOD_PREDICTIONS) + corpus.predictions_cases()),
    Slot("report", "metrics", lambda b, w: ["report", str(b.parent), "--out", str(w / "r.html")],
         without(generic({"a": 1}), "missing") + corpus.top_level_cases("metric name -> value")),
    Slot("pool", "predictions", lambda b, w: ["pool", str(b), "--challenges", str(files(w)["challenges"]),
                                              "--output", str(w / "pooled.json")],
         generic(GOOD_PREDICTIONS) + corpus.predictions_cases()),
    Slot("pool", "challenges", lambda b, w: ["pool", str(files(w)["predictions"]), "--challenges", str(b),
                                             "--output", str(w / "pooled.json")],
         generic(GOOD_CHALLENGES) + corpus.challenges_cases(need_inputs=True)),
    Slot("build-data", "challenges", lambda b, w: ["build-data", "--challenges", str(b), "--output-dir",
                                                   str(w / "built"), "--num-aug", "1", "--no-progress"],
         generic(GOOD_CHALLENGES) + corpus.gz_cases() + loose(corpus.challenges_cases(need_inputs=True))
         + [Case("separator_in_a_task_id", as_json({"a|||t1|||0123456789": GOOD_CHALLENGES["t1"]}),
                 ("task a|||t1|||0123456789", "'|||'"))]),
    Slot("build-data", "solutions", lambda b, w: ["build-data", "--challenges", str(files(w)["challenges"]),
                                                  "--solutions", str(b), "--output-dir", str(w / "built"),
                                                  "--num-aug", "1", "--no-progress"],
         generic(GOOD_SOLUTIONS) + loose(without(corpus.solutions_cases(), "challenges_passed_as_solutions"))),
    Slot("kaggle", "challenges", lambda b, w: ["kaggle", "--challenges-file", str(b), "--output-dir", str(w / "k"),
                                               "--weights", "scratch", "--budget-minutes", "1", "--device", "cpu",
                                               "--no-progress"],
         generic(GOOD_CHALLENGES) + corpus.gz_cases() + corpus.top_level_cases("task id -> task")),
    Slot("proof", "tasks", lambda b, w: ["proof", "--tasks", str(b), "--output-dir", str(w / "proof")] if files(w)
         else [],
         generic(GOOD_CHALLENGES) + corpus.top_level_cases("task id -> task")
         + corpus.task_list_cases("arc-agi_good_challenges.json")),
    Slot("eval", "challenges", lambda b, w: ["eval", "--checkpoint", str(w / "none.pt"), "--data", str(w),
                                             "--output-dir", str(w / "ev"), "--challenges", str(b)],
         generic(GOOD_CHALLENGES) + corpus.challenges_cases(need_inputs=True)),
    Slot("eval", "solutions", lambda b, w: ["eval", "--checkpoint", str(w / "none.pt"), "--data", str(w),
                                            "--output-dir", str(w / "ev"), "--solutions", str(b)],
         generic(GOOD_SOLUTIONS) + corpus.solutions_cases()),
    Slot("info", "checkpoint", lambda b, w: ["info", str(b)], corpus.checkpoint_cases(), ".pt"),
    Slot("export", "checkpoint", lambda b, w: ["export", str(b), str(w / "exp")], corpus.checkpoint_cases(), ".pt"),
    Slot("eval", "checkpoint", lambda b, w: ["eval", "--checkpoint", str(b), "--data", str(w), "--output-dir",
                                             str(w / "ev")], corpus.checkpoint_cases(), ".pt"),
    Slot("train", "config", lambda b, w: ["train", "--config-name", str(b)], corpus.config_cases(), ".yaml"),
    Slot("hub", "run folder", lambda b, w: ["hub", "push", str(b), "me/x", "--dry-run"],
         [Case("missing", corpus.absent, ("not a folder",)), Case("a_file", corpus.text("x"), ("not a folder",))],
         ""),
]
CASES = [(slot, case) for slot in SLOTS for case in slot.cases]


def bad_path(slot: Slot, case: Case, w: Path) -> Path:
    if slot.kind == "predictions":
        return w / "run" / "predictions.json"
    if slot.kind == "metrics":
        (w / "run").mkdir(parents=True, exist_ok=True)
        (w / "run" / "predictions.json").write_text(json.dumps(GOOD_PREDICTIONS))
        return w / "run" / "metrics.json"
    name = f"arc-agi_bad_{slot.kind.replace(' ', '_')}"
    if case.name == "corrupt_gz":
        return w / f"{name}{slot.suffix}.gz"
    return w / f"{name}{slot.suffix}" if slot.suffix else w / name


def run_trm(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = trm(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def check(rc: int, out: str, err: str, expected_rc: int, names: list[str]) -> None:
    assert "Traceback" not in out + err and 'File "' not in err, err
    assert rc == expected_rc, (rc, out[-500:], err)
    text = err if rc == 2 else out
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if rc == 2:
        assert len(lines) == 1, f"more than one line on stderr: {lines}"
    for name in names:
        assert name in text, f"{name!r} not in {text!r}"


@pytest.mark.parametrize("slot,case", CASES, ids=[f"{s.command}-{s.kind}-{c.name}" for s, c in CASES])
def test_every_bad_input_is_one_line_naming_where_the_problem_is(slot, case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = bad_path(slot, case, tmp_path)
    case.write(path)
    rc, out, err = run_trm(slot.argv(path, tmp_path), capsys)
    check(rc, out, err, case.exit_code, [path.name, *case.where])


# --- output paths -----------------------------------------------------------------------------------------

def tiny_checkpoint(path: Path) -> Path:
    from conftest import tiny_arch
    from trm_core.checkpoint import save_checkpoint
    from trm_core.model import build_model

    save_checkpoint(path, build_model(tiny_arch()))
    return path


def read_only_folder(tmp_path: Path) -> Path | None:
    """A folder no file can be created in: chmod 555, or (as root, who ignores modes) /sys when it refuses."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    if not os.access(folder, os.W_OK):
        return folder
    folder.chmod(0o755)
    try:
        os.mkdir("/sys/trm-write-test")
    except OSError:
        return Path("/sys")
    os.rmdir("/sys/trm-write-test")
    return None


OUTPUTS = {  # what -> (argv from (work folder, a file in the way), the path the message must name)
    "eval --output-dir under a file": lambda w, f: ["eval", "--checkpoint", str(tiny_checkpoint(w / "m.pt")),
                                                    "--data", str(w), "--output-dir", str(f / "ev")],
    "report --out under a file": lambda w, f: ["report", str(files(w)["predictions"].parent), "--out",
                                               str(f / "r.html")],
    "report --out is a folder": lambda w, f: ["report", str(files(w)["predictions"].parent), "--out",
                                              str(f.parent / "a_folder")],
    "pool --output under a file": lambda w, f: ["pool", str(files(w)["predictions"]), "--challenges",
                                                str(files(w)["challenges"]), "--output", str(f / "s.json")],
    "pool --output is a folder": lambda w, f: ["pool", str(files(w)["predictions"]), "--challenges",
                                               str(files(w)["challenges"]), "--output", str(f.parent / "a_folder")],
    "kaggle --output-dir under a file": lambda w, f: ["kaggle", "--challenges-file", str(files(w)["challenges"]),
                                                      "--output-dir", str(f / "k"), "--weights", "scratch",
                                                      "--no-progress"],
    "build-data --output-dir under a file": lambda w, f: ["build-data", "--challenges", str(files(w)["challenges"]),
                                                          "--output-dir", str(f / "b"), "--num-aug", "1",
                                                          "--no-progress"],
    "export out_dir under a file": lambda w, f: ["export", str(tiny_checkpoint(w / "m.pt")), str(f / "exp")],
    "train output_dir under a file": lambda w, f: ["train", "--config-name", "cfg_tiny", f"output_dir={f}/runs",
                                                   "+run_name=x", f"data_paths=[{w}]"],
    "hub fetch --local-dir under a file": lambda w, f: ["hub", "fetch", "me/x", "model.pt", "--local-dir",
                                                        str(f / "dl")],
}


@pytest.mark.parametrize("what", OUTPUTS)
def test_an_unusable_output_path_is_one_line_naming_it_and_why(what, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocker = tmp_path / "a_file"
    blocker.write_text("in the way")
    (tmp_path / "a_folder").mkdir()
    rc, out, err = run_trm(OUTPUTS[what](tmp_path, blocker), capsys)
    check(rc, out, err, 2, ["a_folder" if "is a folder" in what else "a_file"])
    assert "a_file is a file, not a folder" in err or "a folder has that name" in err, err


@pytest.mark.parametrize("command", ["eval", "kaggle", "report"])
def test_a_read_only_output_folder_is_named_with_the_reason(command, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ro = read_only_folder(tmp_path)
    if ro is None:
        pytest.skip("no read-only folder available here")
    target = ro / "out"
    argv = {"eval": ["eval", "--checkpoint", "m.pt", "--data", str(tmp_path), "--output-dir", str(target)],
            "kaggle": ["kaggle", "--challenges-file", str(files(tmp_path)["challenges"]), "--output-dir", str(target),
                       "--weights", "scratch", "--no-progress"],
            "report": ["report", str(files(tmp_path)["predictions"].parent), "--out", str(target / "r.html")]}[command]
    rc, out, err = run_trm(argv, capsys)
    check(rc, out, err, 2, [str(target)])
    assert "permission denied" in err.lower() or "read-only" in err or "not permitted" in err.lower(), err


def test_a_kaggle_log_that_cannot_be_written_still_leaves_the_fallback_submission(tmp_path, capsys):
    from trm_core.submission import check_submission

    chal = tmp_path / "hidden_challenges.json"
    chal.write_text(json.dumps({"bad1": {"train": [], "test": [{"input": [[1, 2]]}]},  # no train pairs: malformed
                                "bad2": {"train": "x", "test": []}}))
    out = tmp_path / "working"
    (out / "kaggle_log.jsonl").mkdir(parents=True)  # the log cannot be opened for writing
    rc, stdout, err = run_trm(["kaggle", "--challenges-file", str(chal), "--output-dir", str(out), "--weights",
                               "scratch", "--no-progress"], capsys)
    assert rc == 0 and "Traceback" not in stdout + err
    assert "kaggle_log.jsonl: a folder has that name" in stdout
    sub = json.loads((out / "submission.json").read_text())
    assert sub == {"bad1": [{"attempt_1": [[1, 2]], "attempt_2": [[1, 2]]}], "bad2": []}
    assert check_submission(out / "submission.json", chal) == []
    assert run_trm(["validate", str(out / "submission.json"), str(chal)], capsys)[:2] == (0, "valid\n")


# --- real processes: nothing but the line reaches the terminal --------------------------------------------

@pytest.mark.parametrize("argv_of", [
    lambda w: ["score", str(w / "deep.json"), str(files(w)["solutions"])],
    lambda w: ["validate", str(files(w)["submission"]), str(w / "deep.json")],
], ids=["score", "validate"])
def test_a_real_trm_process_prints_one_line_and_exits_2(argv_of, tmp_path):
    (tmp_path / "deep.json").write_text("[" * 5000 + "]" * 5000)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    env.pop("TRM_TRACEBACK", None)
    res = subprocess.run([sys.executable, "-c", "import sys; from trm_core.cli import main; sys.exit(main())",
                          *argv_of(tmp_path)], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.count("\n") == 1 and "deep.json" in res.stderr and "nesting deeper than" in res.stderr
