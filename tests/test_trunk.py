"""The CPU-pretrained trunk shipped in trm_core/trunks/cpu_c12_h64: small, self-describing, and it knows something
about ARC tasks it never saw."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch
from conftest import REPO

from trm_core.checkpoint import load_checkpoint, read_checkpoint
from trm_core.data.arc import load_task_file
from trm_core.data.augment import grid_to_tokens
from trm_core.model import build_model, predict
from trm_core.proof import SHIPPED_TRUNK

HELD_OUT = REPO / "data" / "heldout" / "arc1_eval_all.json"


def test_the_shipped_trunk_is_a_few_mb_and_carries_its_settings():
    files = {p.name: p.stat().st_size for p in SHIPPED_TRUNK.iterdir()}
    assert {"model.pt", "config.yaml", "MODEL_CARD.md"} <= set(files)
    assert sum(files.values()) < 5e6
    contents = read_checkpoint(SHIPPED_TRUNK / "model.pt")
    assert contents.kind == "trunk" and contents.arch["seq_len"] == 12 * 12
    model = load_checkpoint(SHIPPED_TRUNK, num_puzzle_identifiers=3)  # no arch settings needed
    assert model.config.hidden_size == 64 and model.config.num_puzzle_identifiers == 3


@pytest.fixture(scope="module")
def held_out_demonstrations():
    """Every demonstration pair of every eligible held-out task (ARC-AGI-1 evaluation, grids <= 10x10)."""
    challenges, _, _ = load_task_file(HELD_OUT)
    pairs = [(p["input"], p["output"]) for task in challenges.values() for p in task["train"]]
    tokens = [[grid_to_tokens(np.array(g, dtype=np.uint8), 12) for g in pair] for pair in pairs]
    inputs, labels = (torch.tensor(np.stack(x)).long() for x in zip(*tokens))
    return inputs, labels


def token_accuracy(preds: torch.Tensor, labels: torch.Tensor) -> float:
    mask = labels != 0  # PAD
    return (((preds == labels) & mask).sum() / mask.sum()).item()


def test_unadapted_the_trunk_predicts_held_out_outputs_better_than_copying_the_input(held_out_demonstrations):
    # None of these tasks was in pretraining; with the mean puzzle embedding the trunk has only the input to go
    # on, so beating "output = input" means it learned what ARC outputs tend to change, not just to copy.
    inputs, labels = held_out_demonstrations
    trunk = load_checkpoint(SHIPPED_TRUNK, num_puzzle_identifiers=1)
    ids = torch.zeros(len(inputs), dtype=torch.int32)
    trained = token_accuracy(predict(trunk, inputs, ids)["preds"], labels)
    copying = token_accuracy(inputs, labels)
    torch.manual_seed(0)
    untrained = token_accuracy(predict(build_model(trunk.config), inputs, ids)["preds"], labels)
    assert trained > copying + 0.02 and untrained < 0.3


def _fake_run(folder, steps, batch, t0):
    """A run folder as `trm train` leaves it: config.yaml, metrics.jsonl (a line every 10 steps, 1 s apart), and
    one checkpoint of a tiny model at the last step."""
    from conftest import tiny_arch

    from trm_core.checkpoint import save_checkpoint

    (folder / "checkpoints" / f"step_{steps}").mkdir(parents=True)
    (folder / "config.yaml").write_text(f"global_batch_size: {batch}\n")
    lines = [{"step": s, "time": t0 + s / 10, "train/lm_loss": 1.0, "train/accuracy": 0.5,
              "train/exact_accuracy": 0.0} for s in range(10, steps + 1, 10)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    save_checkpoint(folder / "checkpoints" / f"step_{steps}" / "model.pt", build_model(tiny_arch()))


def test_a_two_stage_snapshot_adds_up_both_stages(tmp_path):
    # Stage 2 started from stage 1's step 300 (load_checkpoint=): the shipped summary counts the steps, examples
    # and hours of both, and the metrics of both stay in the repo, each tagged with its stage.
    import snapshot_cpu_trunk  # scripts/, on sys.path via conftest

    _fake_run(tmp_path / "s1", 300, 64, 1000.0)
    _fake_run(tmp_path / "s2", 200, 32, 5000.0)
    out, results = tmp_path / "trunk", tmp_path / "results"
    assert snapshot_cpu_trunk.main([str(tmp_path / "s2"), "--previous", f"{tmp_path / 's1'}:300", "--trunk-dir",
                                    str(out), "--results-dir", str(results), "--skip-heldout"]) == 0
    summary = json.loads((results / "summary.json").read_text())
    assert summary["total_steps"] == 500 and summary["total_examples"] == 300 * 64 + 200 * 32
    assert [s["run"] for s in summary["stages"]] == ["s1", "s2"] and summary["checkpoint"] == "checkpoints/step_200"
    with gzip.open(results / "metrics.jsonl.gz", "rt") as f:
        stages = [json.loads(line)["stage"] for line in f]
    assert stages.count(1) == 30 and stages.count(2) == 20
    assert read_checkpoint(out / "model.pt").kind == "trunk"


def test_a_snapshot_names_a_malformed_previous_stage(tmp_path, capsys):
    import snapshot_cpu_trunk

    _fake_run(tmp_path / "s2", 20, 8, 0.0)
    assert snapshot_cpu_trunk.main([str(tmp_path / "s2"), "--previous", "runs/cpu_pretrain", "--trunk-dir",
                                    str(tmp_path / "t"), "--results-dir", str(tmp_path / "r"), "--skip-heldout"]) == 2
    assert "RUN:STEP" in capsys.readouterr().err
