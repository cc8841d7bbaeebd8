"""GPU parity: eager SDPA (upstream's path) vs torch.compile vs flash-attn, and RoPE tables computed on the GPU.

Skipped without CUDA (flash-attn part: without the flash-attn package). Small model, a few seconds on one GPU.
The three paths compute the same function; in bf16 they differ by rounding only, so they must agree within bf16
tolerance and on (nearly) every argmax.
"""

from __future__ import annotations

import pytest
import torch
from conftest import requires_cuda

from trm_core.config import ArchConfig
from trm_core.layers import _flash_attn_func, rope_tables
from trm_core.model import build_model, predict

pytestmark = [pytest.mark.gpu, requires_cuda]


def _model(attn_backend: str, state=None):
    cfg = ArchConfig(hidden_size=128, num_heads=4, L_layers=2, H_cycles=2, L_cycles=2, puzzle_emb_ndim=128,
                     puzzle_emb_len=16, num_puzzle_identifiers=16, halt_max_steps=4, forward_dtype="bfloat16",
                     attn_backend=attn_backend)
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():
        model.inner.puzzle_emb.weights.normal_(0, 0.5)
        model.inner.q_head.weight.normal_(0, 0.05)
    if state is not None:
        model.load_state_dict(state)
    return model.cuda().eval()


def _batch(n: int = 8):
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 12, (n, 900), generator=g).cuda(), torch.randint(1, 16, (n,), generator=g).cuda()


def _agree(a: dict, b: dict) -> None:
    """Equal up to bf16 rounding: bf16 keeps 8 mantissa bits, and 4 ACT steps x 6 applications of the network
    amplify a different order of rounding (fused kernels) to ~2% of the logits' norm with random weights; the
    same model in fp32 vs bf16 differs by ~3% (tests/test_model.py). A real bug (a wrong mask, scale or RoPE
    position) moves them by tens of percent."""
    la, lb = a["logits"].float(), b["logits"].float()
    assert ((la - lb).norm() / la.norm()).item() < 0.05
    assert (a["preds"] == b["preds"]).float().mean().item() > 0.97  # random weights: many near-ties
    torch.testing.assert_close(a["q_halt_logits"], b["q_halt_logits"], rtol=2e-2, atol=5e-2)


def test_rope_tables_of_a_model_moved_to_the_gpu_are_the_gpus():
    model = _model("sdpa")
    rot = model.inner.rotary_emb
    cos, sin = rope_tables(rot.head_dim, rot.max_positions, rot.base, "cuda")
    assert rot.cos_cached.is_cuda and torch.equal(rot.cos_cached, cos) and torch.equal(rot.sin_cached, sin)


def test_eager_sdpa_and_compiled_outputs_agree_within_bf16_tolerance():
    eager = _model("sdpa")
    compiled = _model("sdpa", state=eager.state_dict())
    compiled.inner.L_level.compile()  # what the trainer and `trm eval --compile` do
    inputs, ids = _batch()
    _agree(predict(eager, inputs, ids), predict(compiled, inputs, ids))


def test_flash_attn_outputs_agree_with_sdpa_within_bf16_tolerance():
    if _flash_attn_func() is None:
        pytest.skip("flash-attn is not installed")
    sdpa = _model("sdpa")
    flash = _model("flash", state=sdpa.state_dict())
    inputs, ids = _batch()
    _agree(predict(sdpa, inputs, ids), predict(flash, inputs, ids))
