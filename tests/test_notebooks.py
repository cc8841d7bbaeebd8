"""The Kaggle notebooks: jupytext source in sync with the .ipynb, a literal parameters cell, papermill runs."""

from __future__ import annotations

import ast
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, tiny_arch
from test_kaggle import kaggle_tree
from trm_core.config import KaggleRunConfig

NOTEBOOKS = REPO / "kaggle_notebooks"
SUBMISSION = NOTEBOOKS / "trm_submission.ipynb"

jupytext = pytest.importorskip("jupytext")
papermill = pytest.importorskip("papermill")


def _cells(nb) -> list[tuple[str, str, list]]:
    return [(c.cell_type, c.source.strip(), sorted(c.metadata.get("tags", []))) for c in nb.cells]


@pytest.mark.parametrize("source", sorted(NOTEBOOKS.glob("*.py")), ids=lambda p: p.name)
def test_jupytext_source_and_ipynb_are_in_sync(source):
    ipynb = source.with_suffix(".ipynb")
    assert ipynb.is_file(), f"run: jupytext --to ipynb {source.relative_to(REPO)}"
    assert _cells(jupytext.read(source)) == _cells(jupytext.read(ipynb)), \
        f"{ipynb.name} is stale: run jupytext --to ipynb {source.relative_to(REPO)}"


def test_parameters_cell_holds_only_annotated_literals_with_a_comment_each():
    nb = jupytext.read(NOTEBOOKS / "trm_submission.py")
    (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    lines = [line for line in cell.source.splitlines() if line.strip()]
    for line, stmt in zip(lines, ast.parse(cell.source).body, strict=True):
        assert isinstance(stmt, ast.AnnAssign), line
        ast.literal_eval(stmt.value)  # a literal, nothing computed
        assert "  # " in line and line.count("=") == 1, f"no comment, or a second '=' papermill skips: {line}"


def test_the_parameters_are_the_config_fields_and_the_cell_is_current():
    sys.path.insert(0, str(REPO / "scripts"))
    import sync_notebook

    assert sync_notebook.main(["--check"]) == 0, "run scripts/sync_notebook.py"
    fields = {f.name for f in dataclasses.fields(KaggleRunConfig)}
    declared = papermill.inspect_notebook(str(SUBMISSION))
    assert set(declared) == fields | set(sync_notebook.NOTEBOOK_ONLY)
    assert all(p["help"] for p in declared.values())


def test_papermill_help_notebook_lists_every_parameter():
    res = subprocess.run([sys.executable, "-m", "papermill", "--help-notebook", str(SUBMISSION)], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    for f in dataclasses.fields(KaggleRunConfig):
        assert f"  {f.name}: " in res.stdout, f"{f.name} is not parsed by papermill"
    assert "Unable to parse" not in res.stdout + res.stderr


def test_every_parameter_papermill_injects_reaches_the_run_config(tmp_path):
    """Inject a value different from the default for every field, run only the parameter cells, and read the
    config the notebook would run."""
    from trm_core.config import config_from

    altered = {"data_dir": "/d", "challenges_file": "/c.json", "solutions_file": "/s.json", "weights": "scratch",
               "output_dir": "/o", "work_dir": "/w", "budget_minutes": 12.5, "commit_budget_minutes": 2.5,
               "mode": "lora", "steps": 7, "batch_size": 9, "train": ["lr=1e-3", "ema=false"], "train_aug": 11,
               "colour_permutation": False, "dihedral_first": True, "train_translation": False, "vote_aug": 13,
               "eval_batch_size": 17, "warmup_steps": 19, "hidden_rerun_factor": 1.5, "safety_margin": 0.25,
               "seed": 23, "device": "cpu", "nproc": 2, "canvas_size": 12, "progress": True,
               "heartbeat_minutes": 0.5, "select": "poe", "select_candidates": 3, "select_views": 2,
               "noise_scale": 0.5, "noise_samples": 1, "pool_checkpoints": 2}
    assert set(altered) == {f.name for f in dataclasses.fields(KaggleRunConfig)}, "give the new field a value"
    papermill.execute_notebook(str(SUBMISSION), str(tmp_path / "prepared.ipynb"), parameters=altered,
                               prepare_only=True, progress_bar=False)
    nb = jupytext.read(tmp_path / "prepared.ipynb")
    namespace: dict = {}
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "parameters" in tags or "injected-parameters" in tags:
            exec(cell.source, namespace)
    cfg = config_from(namespace)
    assert {k: getattr(cfg, k) for k in altered} == altered


def tiny_weights(folder: Path, canvas: int = 10) -> Path:
    """A `trm export` folder of an untrained tiny TRM (model.pt + config.yaml), as the weights dataset holds."""
    from trm_core import build_model
    from trm_core.checkpoint import export_trunk, save_checkpoint

    model = build_model(tiny_arch(seq_len=canvas * canvas, halt_max_steps=2))
    save_checkpoint(folder.parent / "full.pt", model)
    export_trunk(folder.parent / "full.pt", folder)
    return folder


def test_submission_notebook_runs_on_a_kaggle_like_tree(tmp_path):
    data, _ = kaggle_tree(tmp_path)
    weights = tiny_weights(tmp_path / "input" / "trm-core-weights")
    wheels = tmp_path / "input" / "trm-core-wheels"
    wheels.mkdir()
    out = tmp_path / "working"
    papermill.execute_notebook(
        str(SUBMISSION), str(tmp_path / "executed.ipynb"), cwd=str(REPO), progress_bar=False,
        parameters=dict(data_dir=str(data), weights=str(weights), wheels_dir=str(wheels), output_dir=str(out),
                        work_dir=str(tmp_path / "work"), budget_minutes=2.0, mode="emb_then_full", steps=8,
                        batch_size=8, train_aug=3, vote_aug=2, warmup_steps=3, device="cpu"))
    from trm_core.submission import check_submission

    assert check_submission(out / "submission.json", data / "arc-agi_test_challenges.json") == []
    executed = (tmp_path / "executed.ipynb").read_text()
    assert "trm_core already importable" in executed and "status: ok" in executed
    assert "submission.json: valid" in executed and "budget: 2 minutes (budget_minutes)" in executed


def test_a_kaggle_commit_run_without_the_rerun_variable_takes_the_commit_budget(tmp_path, monkeypatch):
    data, _ = kaggle_tree(tmp_path)
    weights = tiny_weights(tmp_path / "input" / "trm-core-weights")
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")  # the kernel inherits it: "on Kaggle"
    monkeypatch.delenv("KAGGLE_IS_COMPETITION_RERUN", raising=False)
    t0 = time.monotonic()
    papermill.execute_notebook(
        str(SUBMISSION), str(tmp_path / "executed.ipynb"), cwd=str(REPO), progress_bar=False,
        parameters=dict(data_dir=str(data), weights=str(weights), output_dir=str(tmp_path / "working"),
                        work_dir=str(tmp_path / "work"), budget_minutes=690.0, commit_budget_minutes=0.5,
                        batch_size=8, train_aug=3, vote_aug=2, warmup_steps=3, device="cpu"))
    executed = (tmp_path / "executed.ipynb").read_text()
    assert "commit run (KAGGLE_IS_COMPETITION_RERUN unset)" in executed and "budget: 0.5 minutes" in executed
    assert "submission.json: valid" in executed
    assert time.monotonic() - t0 < 30 + 60  # half a minute of budget, plus the kernel's start


def test_batch_eval_runs_a_grid_and_tabulates_it(tmp_path):
    sys.path.insert(0, str(REPO / "scripts"))
    import batch_eval

    data, solutions = kaggle_tree(tmp_path)
    grid = tmp_path / "grid.yaml"
    grid.write_text(json.dumps({
        "notebook": str(SUBMISSION),
        "base": {"challenges_file": str(data / "arc-agi_test_challenges.json"), "solutions_file": str(solutions),
                 "weights": "scratch", "canvas_size": 10, "budget_minutes": 2.0, "steps": 2, "batch_size": 8,
                 "train_aug": 2, "vote_aug": 1, "warmup_steps": 2, "device": "cpu"},
        "grid": {"mode": ["none", "emb_only"]}}))
    assert batch_eval.main([str(grid), "--out", str(tmp_path / "batch")]) == 0
    table = (tmp_path / "batch" / "results.csv").read_text().splitlines()
    assert len(table) == 3 and table[0].startswith("run,status,score,seconds")
    assert all(",ok," in row for row in table[1:])
    assert "| run | status | score |" in (tmp_path / "batch" / "results.md").read_text()
    assert len(list((tmp_path / "batch").glob("*/notebook.ipynb"))) == 2
