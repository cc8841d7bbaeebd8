"""End to end on CPU: real ARC-AGI-2 evaluation tasks -> dataset -> tiny checkpoint -> `trm eval` -> files."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

TASKS = 3  # the first three ARC-AGI-2 evaluation tasks


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A dataset of 3 real tasks (2 augmentations each), and a tiny random model saved as a checkpoint."""
    from trm_core.checkpoint import save_checkpoint
    from trm_core.config import ArchConfig
    from trm_core.data.arc import load_challenges_json
    from trm_core.data.build import build_dataset
    from trm_core.model import build_model

    from conftest import ARC_DIR

    tmp = tmp_path_factory.mktemp("e2e")
    chal = load_challenges_json(ARC_DIR / "arc-agi_evaluation2_challenges.json.gz")
    sols = load_challenges_json(ARC_DIR / "arc-agi_evaluation2_solutions.json.gz")
    ids = list(chal)[:TASKS]
    (tmp / "challenges.json").write_text(json.dumps({t: chal[t] for t in ids}))
    (tmp / "solutions.json").write_text(json.dumps({t: sols[t] for t in ids}))
    build_dataset(None, tmp / "data", ["evaluation2"], test_set_names=["evaluation2"], num_aug=2, progress=False,
                  sources=[("evaluation2", tmp / "challenges.json", tmp / "solutions.json")])
    identifiers = json.loads((tmp / "data" / "identifiers.json").read_text())
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = build_model(ArchConfig(hidden_size=32, num_heads=2, L_layers=1, H_cycles=1, L_cycles=1,
                                   halt_max_steps=2, seq_len=900, num_puzzle_identifiers=len(identifiers),
                                   puzzle_emb_ndim=32, puzzle_emb_len=1, forward_dtype="float32"))
    save_checkpoint(tmp / "model.pt", model, identifiers_path=tmp / "data" / "identifiers.json")
    return tmp


def test_run_arc_eval_writes_a_valid_submission(run, capsys):
    from trm_core.evaluate import main_eval, validate_submission
    from trm_core.report import main as report_main

    out = run / "eval"
    assert main_eval(["--checkpoint", str(run / "model.pt"), "--data", str(run / "data"), "--output-dir", str(out),
                      "--device", "cpu", "--batch-size", "8", "--no-progress"]) == 0
    assert validate_submission(out / "submission.json", run / "challenges.json") == []
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tasks"] == TASKS and 0.0 <= metrics["kaggle_score"] <= 1.0
    assert all(f"ARC/pass@{k}" in metrics for k in (1, 2, 5, 10, 100, 1000))
    with open(out / "per_task.csv") as f:
        assert [r["task_id"] for r in csv.DictReader(f)] == list(json.loads((run / "challenges.json").read_text()))
    assert report_main([str(out)]) == 0 and (out / "report.html").stat().st_size > 0
    assert "kaggle_score" in capsys.readouterr().out


def test_an_oracle_model_scores_one(run, monkeypatch):
    """Predict each row's label exactly: inverting the builder's augmentations and voting must then find
    every answer (pass@1 = Kaggle score = 1), which checks the whole data -> vote -> submission chain."""
    import torch

    import trm_core.model
    from trm_core.evaluate import run_eval, score_submission

    inputs = np.load(run / "data" / "test" / "all__inputs.npy")
    labels = np.load(run / "data" / "test" / "all__labels.npy")
    answer = {row.tobytes(): label for row, label in zip(inputs.astype(np.uint8), labels)}

    def oracle(model, x, puzzle_identifiers, steps=None):
        rows = x.cpu().numpy().astype(np.uint8)
        preds = torch.as_tensor(np.stack([answer[r.tobytes()] for r in rows]).astype(np.int64))
        logits = 10.0 * torch.nn.functional.one_hot(preds, 12).float()  # for the default rescoring rule
        return {"preds": preds, "logits": logits, "q_halt_logits": torch.zeros(len(rows))}

    monkeypatch.setattr(trm_core.model, "predict", oracle)
    metrics = run_eval(run / "model.pt", run / "data", run / "oracle", device="cpu", batch_size=4, progress=False)
    assert metrics["ARC/pass@1"] == 1.0 and metrics["kaggle_score"] == 1.0
    assert metrics["test_inputs_without_prediction"] == 0
    assert score_submission(run / "oracle" / "submission.json", run / "solutions.json")[0] == 1.0


def test_rows_split_over_two_ranks_come_back_whole_on_rank_0(run, monkeypatch):
    import trm_core.dist
    from trm_core import load_checkpoint
    from trm_core.data.dataset import PuzzleDataset
    from trm_core.dist import DistInfo
    from trm_core.evaluate import run_inference

    model = load_checkpoint(run / "model.pt")

    def infer(rank, world, info=None):
        data = PuzzleDataset([run / "data"], "test", global_batch_size=4, rank=rank, world_size=world)
        return run_inference(model, data, info=info, progress=False)

    single = infer(0, 1)
    shards = [infer(0, 2), infer(1, 2)]
    assert 0 < len(shards[0]["example_index"]) < len(single["example_index"])
    monkeypatch.setattr(trm_core.dist, "gather_objects", lambda obj, info: shards if info.rank == 0 else None)
    assert infer(1, 2, DistInfo(rank=1, world_size=2)) is None
    merged = infer(0, 2, DistInfo(rank=0, world_size=2))
    for key in ("example_index", "inputs", "puzzle_identifiers"):
        np.testing.assert_array_equal(merged[key], single[key])
    np.testing.assert_allclose(merged["q_halt_logits"], single["q_halt_logits"], rtol=1e-4, atol=1e-5)


def test_eval_reports_the_loss_head_metrics_as_upstreams_evaluation_computes_them(run):
    """all/accuracy, exact_accuracy, q_halt_accuracy, steps, lm_loss: upstream runs ACTLossHead on each eval batch
    until every row halts, sums its metrics over batches and divides each by count."""
    import torch

    from trm_core import load_checkpoint
    from trm_core.data.dataset import PuzzleDataset
    from trm_core.evaluate import run_eval
    from trm_core.model import ACTLossHead

    metrics = run_eval(run / "model.pt", run / "data", run / "metrics_eval", device="cpu", batch_size=5,
                       progress=False)
    head = ACTLossHead(load_checkpoint(run / "model.pt")).eval()
    sums: dict = {}
    with torch.inference_mode():
        for batch in PuzzleDataset([run / "data"], "test", global_batch_size=5).iter_test():
            batch = {k: v for k, v in batch.items() if k != "example_index"}
            carry = head.initial_carry(batch)
            while True:
                carry, _, step_metrics, _, done = head(carry, batch)
                if done:
                    break
            for k, v in step_metrics.items():
                sums[k] = sums.get(k, 0.0) + float(v)
    assert metrics["all/count"] == sums["count"] > 0
    for k in ("accuracy", "exact_accuracy", "q_halt_accuracy", "steps", "lm_loss"):
        assert metrics[f"all/{k}"] == pytest.approx(sums[k] / sums["count"], rel=1e-5), k


def test_evaluating_on_a_dataset_with_other_identifiers_is_refused_naming_both_sizes(run, capsys):
    from trm_core.data.build import build_dataset
    from trm_core.evaluate import main_eval

    other = run / "data_aug3"  # the same tasks, built with another --num-aug: other identifiers
    build_dataset(None, other, ["evaluation2"], test_set_names=["evaluation2"], num_aug=3, progress=False,
                  sources=[("evaluation2", run / "challenges.json", run / "solutions.json")])
    assert main_eval(["--checkpoint", str(run / "model.pt"), "--data", str(other), "--output-dir",
                      str(run / "refused"), "--device", "cpu", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "puzzle-embedding table has 10 rows" in err and "has 13 puzzle identifiers" in err
    assert "trm build-data" in err and not (run / "refused" / "submission.json").exists()


def test_trm_eval_compiles_the_recursion_when_asked_as_upstream_evaluates_its_compiled_model(run, monkeypatch):
    import torch

    from trm_core.evaluate import run_eval
    from trm_core.model import ReasoningModule

    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **kw: compiled.append(type(self)))
    metrics = run_eval(run / "model.pt", run / "data", run / "compiled", device="cpu", compile=True, progress=False)
    assert compiled == [ReasoningModule] and metrics["compiled"] is True  # the trainer's compile target
    metrics = run_eval(run / "model.pt", run / "data", run / "eager", device="cpu", progress=False)
    assert compiled == [ReasoningModule] and metrics["compiled"] is False  # default: on CUDA only
