"""The CPU-pretrained trunk shipped in trm_core/trunks/cpu_c12_h64: small, self-describing, and it knows something
about ARC tasks it never saw."""

from __future__ import annotations

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
