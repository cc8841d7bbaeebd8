"""The Kaggle notebooks: jupytext source in sync with the .ipynb, a literal parameters cell, papermill runs."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest

from conftest import REPO, tiny_arch
from test_kaggle import kaggle_tree

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
        assert isinstance(stmt, ast.AnnAssign) and isinstance(stmt.value, ast.Constant), line
        assert "  # " in line, f"no comment: {line}"
    declared = papermill.inspect_notebook(str(SUBMISSION))
    assert {"data_dir", "weights_dir", "wheels_dir", "repo_dir", "output_dir", "budget_minutes", "mode", "steps",
            "batch_size", "lr", "puzzle_emb_lr", "train_aug", "vote_aug", "seed"} <= set(declared)


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
        parameters=dict(data_dir=str(data), weights_dir=str(weights), wheels_dir=str(wheels), output_dir=str(out),
                        work_dir=str(tmp_path / "work"), budget_minutes=2.0, mode="emb_then_full", steps=8,
                        batch_size=8, train_aug=3, vote_aug=2, warmup_steps=3, device="cpu"))
    from trm_core.kaggle import check_submission

    assert check_submission(out / "submission.json", data / "arc-agi_test_challenges.json") == []
    executed = (tmp_path / "executed.ipynb").read_text()
    assert "trm_core already importable" in executed and "status: ok" in executed
    assert "submission.json: valid" in executed


def test_batch_eval_runs_a_grid_and_tabulates_it(tmp_path):
    sys.path.insert(0, str(REPO / "scripts"))
    import batch_eval

    data, solutions = kaggle_tree(tmp_path)
    grid = tmp_path / "grid.yaml"
    grid.write_text(json.dumps({
        "notebook": str(SUBMISSION),
        "base": {"challenges_file": str(data / "arc-agi_test_challenges.json"), "solutions_file": str(solutions),
                 "weights_dir": "scratch", "canvas_size": 10, "budget_minutes": 2.0, "steps": 2, "batch_size": 8,
                 "train_aug": 2, "vote_aug": 1, "warmup_steps": 2, "device": "cpu"},
        "grid": {"mode": ["none", "emb_only"]}}))
    assert batch_eval.main([str(grid), "--out", str(tmp_path / "batch")]) == 0
    table = (tmp_path / "batch" / "results.csv").read_text().splitlines()
    assert len(table) == 3 and table[0].startswith("run,status,score,seconds")
    assert all(",ok," in row for row in table[1:])
    assert "| run | status | score |" in (tmp_path / "batch" / "results.md").read_text()
    assert len(list((tmp_path / "batch").glob("*/notebook.ipynb"))) == 2
