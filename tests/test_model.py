"""The TRM model: upstream-compatible names and shapes, golden numerics, recursion and ACT behaviour."""

from __future__ import annotations

import math
import time

import pytest
import torch

from conftest import requires_cuda, tiny_arch
from trm_core import predict
from trm_core.config import ArchConfig, swiglu_width
from trm_core.layers import RotaryEmbedding, apply_rotary_pos_emb, rms_norm, rotate_half, trunc_normal_init_
from trm_core.model import ACTLossHead, build_model, log_stablemax, stablemax_cross_entropy, softmax_cross_entropy


def arc_config(**kw) -> ArchConfig:
    """Upstream's ARC run: hidden 512, 8 heads, L_layers 2, H_cycles 3, L_cycles 4, puzzle_emb_len 16."""
    return ArchConfig(hidden_size=512, num_heads=8, L_layers=2, H_cycles=3, L_cycles=4, puzzle_emb_len=16,
                      puzzle_emb_ndim=512, num_puzzle_identifiers=3, seq_len=900, **kw)


def make_batch(cfg: ArchConfig, B: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randint(2, cfg.vocab_size, (B, cfg.seq_len), generator=g, dtype=torch.int32)
    labels = torch.randint(2, cfg.vocab_size, (B, cfg.seq_len), generator=g).long()
    ids = torch.randint(1, cfg.num_puzzle_identifiers, (B,), generator=g, dtype=torch.int32)
    return {"inputs": inputs, "labels": labels, "puzzle_identifiers": ids}


# --- names, shapes, sizes -------------------------------------------------------------------------------------

UPSTREAM_ARC_SHAPES = {
    "inner.H_init": ((512,), torch.bfloat16),
    "inner.L_init": ((512,), torch.bfloat16),
    "inner.embed_tokens.embedding_weight": ((12, 512), torch.float32),
    "inner.lm_head.weight": ((12, 512), torch.float32),
    "inner.q_head.weight": ((2, 512), torch.float32),
    "inner.q_head.bias": ((2,), torch.float32),
    "inner.puzzle_emb.weights": ((3, 512), torch.float32),
    **{f"inner.L_level.layers.{i}.{name}": (shape, torch.float32) for i in range(2) for name, shape in [
        ("self_attn.qkv_proj.weight", (1536, 512)), ("self_attn.o_proj.weight", (512, 512)),
        ("mlp.gate_up_proj.weight", (3072, 512)), ("mlp.down_proj.weight", (512, 1536))]},
}


def test_arc_architecture_has_upstream_parameter_names_shapes_and_dtypes():
    sd = build_model(arc_config()).state_dict()
    assert {k: (tuple(v.shape), v.dtype) for k, v in sd.items()} == UPSTREAM_ARC_SHAPES


def test_arc_architecture_has_6829058_trainable_parameters():
    model = build_model(arc_config())
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 6_829_058


def test_puzzle_embedding_table_is_a_buffer_not_a_parameter():
    model = build_model(arc_config())
    assert "inner.puzzle_emb.weights" in dict(model.named_buffers())
    assert "inner.puzzle_emb.weights" not in dict(model.named_parameters())


def test_swiglu_width_for_hidden_512_is_1536():
    assert swiglu_width(512, 4) == 1536
    assert swiglu_width(916, 4) == 2560  # upstream's mlp_t width at sequence length 916


def test_mlp_t_variant_replaces_attention_with_a_sequence_mlp():
    cfg = tiny_arch(mlp_t=True, pos_encodings="none")
    sd = build_model(cfg).state_dict()
    L = cfg.seq_len + cfg.prefix_len
    assert sd["inner.L_level.layers.0.mlp_t.gate_up_proj.weight"].shape == (2 * swiglu_width(L, 4), L)
    assert not any("self_attn" in k for k in sd)


def test_learned_positions_add_embed_pos_over_prefix_and_grid():
    cfg = tiny_arch(pos_encodings="learned")
    sd = build_model(cfg).state_dict()
    assert sd["inner.embed_pos.embedding_weight"].shape == (cfg.seq_len + cfg.prefix_len, cfg.hidden_size)


def test_initialisation_matches_upstream():
    model = build_model(arc_config())
    inner = model.inner
    assert torch.all(inner.q_head.weight == 0) and torch.all(inner.q_head.bias == -5)
    assert torch.all(inner.puzzle_emb.weights == 0)
    w = inner.L_level.layers[0].self_attn.qkv_proj.weight
    assert abs(w.std().item() - 1 / math.sqrt(512)) < 0.02 / math.sqrt(512) * 10
    assert w.abs().max().item() <= 2 * 1.14 / math.sqrt(512)  # clipped at 2 compensated std


def test_truncated_normal_has_the_requested_std():
    t = trunc_normal_init_(torch.empty(200_000), std=0.5)
    assert abs(t.std().item() - 0.5) < 0.005
    assert t.abs().max().item() <= 2 * 0.5 * 1.14


# --- golden numerics -------------------------------------------------------------------------------------------

def test_rope_tables_use_the_half_split_layout_over_prefix_and_grid_positions():
    rope = RotaryEmbedding(head_dim=64, max_positions=916, base=10000.0)
    cos, sin = rope()
    assert cos.shape == (916, 64)
    pos, i = 37, 5
    freq = 10000.0 ** (-2 * i / 64)
    assert cos[pos, i].item() == pytest.approx(math.cos(pos * freq), abs=1e-5)
    assert cos[pos, i + 32].item() == pytest.approx(math.cos(pos * freq), abs=1e-5)  # same freq, second half
    assert sin[pos, i + 32].item() == pytest.approx(math.sin(pos * freq), abs=1e-5)


def test_rotate_half_and_rotation_on_a_known_vector():
    x = torch.arange(1.0, 5.0)  # [1, 2, 3, 4]
    assert rotate_half(x).tolist() == [-3.0, -4.0, 1.0, 2.0]
    rope = RotaryEmbedding(head_dim=4, max_positions=3, base=10000.0)
    cos, sin = rope()
    q = x.view(1, 1, 1, 4).repeat(1, 3, 1, 1)  # (B=1, S=3, H=1, D=4)
    q_rot, _ = apply_rotary_pos_emb(q, q, cos, sin)
    # position 1, frequency pair 0 (theta=1 rad): (x0, x2) rotated by 1 radian
    c, s = math.cos(1.0), math.sin(1.0)
    assert q_rot[0, 1, 0, 0].item() == pytest.approx(1 * c - 3 * s, abs=1e-6)
    assert q_rot[0, 1, 0, 2].item() == pytest.approx(3 * c + 1 * s, abs=1e-6)
    assert torch.allclose(q_rot[0, 0], q[0, 0])  # position 0 is not rotated


def test_rms_norm_is_parameter_free_and_unit_rms():
    x = torch.tensor([[3.0, 4.0]])
    y = rms_norm(x, eps=0.0)
    assert torch.allclose(y, x / math.sqrt(12.5))


def test_stablemax_values_match_hand_computation():
    x = torch.tensor([-1.0, 0.0, 2.0], dtype=torch.float64)
    # s = [1/(1+1), 0+1, 2+1] = [0.5, 1, 3], sum 4.5
    expected = torch.log(torch.tensor([0.5, 1.0, 3.0], dtype=torch.float64) / 4.5)
    assert torch.allclose(log_stablemax(x), expected, atol=1e-12)


def upstream_stablemax_ce(logits, labels):
    """Upstream's formula, verbatim in float64 (reference for the golden test)."""
    x = logits.to(torch.float64)
    s = torch.where(x < 0, 1 / (1 - x + 1e-30), x + 1)
    logprobs = torch.log(s / s.sum(-1, keepdim=True))
    valid = labels != -100
    g = torch.gather(logprobs, -1, torch.where(valid, labels, 0).unsqueeze(-1)).squeeze(-1)
    return -torch.where(valid, g, 0)


def test_stablemax_cross_entropy_fp32_and_fp64_match_upstream_formula():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 16, 12, generator=g) * 3
    labels = torch.randint(0, 12, (4, 16), generator=g)
    labels[0, :5] = -100
    ref = upstream_stablemax_ce(logits, labels)
    assert torch.allclose(stablemax_cross_entropy(logits, labels, torch.float64), ref, atol=1e-12)
    assert torch.allclose(stablemax_cross_entropy(logits, labels, torch.float32).double(), ref, atol=1e-5)
    assert torch.all(stablemax_cross_entropy(logits, labels)[0, :5] == 0)


def test_stablemax_gradient_is_finite_when_a_logit_is_exactly_one():
    logits = torch.tensor([[1.0, -2.0, 0.5]], requires_grad=True)
    stablemax_cross_entropy(logits, torch.tensor([0])).sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_softmax_cross_entropy_ignores_padding():
    logits = torch.randn(2, 3, 12)
    labels = torch.tensor([[1, -100, 3], [4, 5, -100]])
    loss = softmax_cross_entropy(logits, labels)
    ref = torch.nn.functional.cross_entropy(logits[0, 0:1], labels[0, 0:1])
    assert loss[0, 0].item() == pytest.approx(ref.item(), rel=1e-5)
    assert loss[0, 1] == 0 and loss[1, 2] == 0


# --- recursion and ACT ------------------------------------------------------------------------------------------

def test_only_the_last_H_cycle_carries_gradient():
    cfg = tiny_arch(H_cycles=3, L_cycles=2)
    model = build_model(cfg).train()
    grad_flags = []
    model.inner.L_level.register_forward_hook(lambda m, i, o: grad_flags.append(o.requires_grad))
    head = ACTLossHead(model)
    batch = make_batch(cfg)
    head(head.initial_carry(batch), batch)[1].backward()
    per_cycle = cfg.L_cycles + 1
    assert len(grad_flags) == cfg.H_cycles * per_cycle
    assert grad_flags == [False] * (cfg.H_cycles - 1) * per_cycle + [True] * per_cycle


def test_carry_is_detached_between_act_steps():
    cfg = tiny_arch()
    head = ACTLossHead(build_model(cfg).train())
    batch = make_batch(cfg)
    carry, loss, *_ = head(head.initial_carry(batch), batch)
    assert not carry.inner[0].requires_grad and not carry.inner[1].requires_grad


def test_eval_mode_runs_exactly_halt_max_steps_eval_steps():
    cfg = tiny_arch(halt_max_steps=5, halt_max_steps_eval=3)
    model = build_model(cfg).eval()
    batch = make_batch(cfg)
    carry = model.initial_carry(batch)
    halted_after = []
    with torch.no_grad():
        for _ in range(3):
            carry, _ = model(carry, batch)
            halted_after.append(bool(carry.halted.all()))
    assert halted_after == [False, False, True]


def test_halted_slots_take_the_new_batch_row_and_others_keep_their_example():
    cfg = tiny_arch(halt_max_steps=2, halt_exploration_prob=0.0)
    model = build_model(cfg).eval()
    first, second = make_batch(cfg, seed=1), make_batch(cfg, seed=2)
    carry = model.initial_carry(first)
    with torch.no_grad():
        carry, _ = model(carry, first)
        assert torch.equal(carry.current_data["inputs"], first["inputs"])
        carry, _ = model(carry, second)  # step 2: not halted before this call -> keeps `first`
        assert torch.equal(carry.current_data["inputs"], first["inputs"])
        carry, _ = model(carry, second)  # all halted after step 2 -> load `second`
        assert torch.equal(carry.current_data["inputs"], second["inputs"])


def test_no_act_continue_false_trains_with_a_q_continue_target():
    cfg = tiny_arch(no_ACT_continue=False)
    head = ACTLossHead(build_model(cfg).train())
    batch = make_batch(cfg)
    _, loss, metrics, _, _ = head(head.initial_carry(batch), batch)
    loss.backward()
    assert "q_continue_loss" in metrics and torch.isfinite(loss)
    assert head.model.inner.q_head.weight.grad is not None


def test_puzzle_emb_ndim_zero_runs_with_a_zero_prefix():
    cfg = tiny_arch(puzzle_emb_ndim=0, puzzle_emb_len=4)
    out = predict(build_model(cfg), make_batch(cfg)["inputs"], torch.zeros(4, dtype=torch.int32))
    assert out["logits"].shape == (4, cfg.seq_len, 12)


def test_loss_head_reports_upstream_metrics():
    cfg = tiny_arch(halt_max_steps=1)
    head = ACTLossHead(build_model(cfg).train())
    batch = make_batch(cfg)
    _, _, metrics, _, all_halted = head(head.initial_carry(batch), batch)
    assert set(metrics) == {"count", "accuracy", "exact_accuracy", "q_halt_accuracy", "steps", "lm_loss",
                            "q_halt_loss"}
    assert all_halted and metrics["count"].item() == 4 and metrics["steps"].item() == 4


def test_training_steps_lower_the_loss_on_a_tiny_model():
    from trm_core.optim import AdamATan2

    torch.manual_seed(0)
    cfg = tiny_arch(halt_max_steps=1)
    head = ACTLossHead(build_model(cfg).train())
    batch = make_batch(cfg, B=8)
    opt = AdamATan2(head.parameters(), lr=3e-3, weight_decay=0.0)
    losses = []
    for _ in range(30):
        _, loss, *_ = head(head.initial_carry(batch), batch)
        opt.zero_grad()
        (loss / 8).backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]


def test_predict_returns_logits_preds_and_q_halt_after_all_eval_steps():
    cfg = tiny_arch()
    model = build_model(cfg)
    batch = make_batch(cfg)
    out = predict(model, batch["inputs"], batch["puzzle_identifiers"])
    assert out["logits"].shape == (4, cfg.seq_len, 12) and out["logits"].dtype == torch.float32
    assert out["q_halt_logits"].shape == (4,)
    assert torch.equal(out["preds"], out["logits"].argmax(-1))


def test_predict_matches_the_act_wrapper_in_eval_mode():
    cfg = tiny_arch(halt_max_steps=3)
    model = build_model(cfg).eval()
    batch = make_batch(cfg)
    carry = model.initial_carry(batch)
    with torch.no_grad():
        for _ in range(3):
            carry, out = model(carry, batch)
    ref = predict(model, batch["inputs"], batch["puzzle_identifiers"])
    assert torch.allclose(out["logits"], ref["logits"], atol=1e-6)


def test_forward_dtype_auto_is_float32_on_cpu_and_bfloat16_is_selectable():
    torch.manual_seed(0)
    cfg = tiny_arch(forward_dtype="auto")
    model = build_model(cfg)
    assert model.forward_dtype(torch.device("cpu")) == torch.float32
    assert model.forward_dtype(torch.device("cuda")) == torch.bfloat16
    bf = build_model(tiny_arch(forward_dtype="bfloat16"))
    bf.load_state_dict(model.state_dict())
    batch = make_batch(cfg)
    a = predict(model, batch["inputs"], batch["puzzle_identifiers"])["logits"]
    b = predict(bf, batch["inputs"], batch["puzzle_identifiers"])["logits"]
    assert b.dtype == torch.float32  # predict returns fp32 logits whatever the forward dtype
    assert ((a - b).norm() / a.norm()).item() < 0.1  # same function up to bf16 rounding (~3% here)


@requires_cuda
def test_bf16_forward_backward_on_gpu_matches_fp32_and_prints_step_time():
    cfg = arc_config(forward_dtype="bfloat16")
    model = build_model(cfg).cuda().train()
    head = ACTLossHead(model)
    batch = {k: v.cuda() for k, v in make_batch(cfg, B=64).items()}
    carry = head.initial_carry(batch)
    for _ in range(2):  # warm-up
        carry, loss, *_ = head(carry, batch)
        loss.backward()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    n = 5
    for _ in range(n):
        carry, loss, *_ = head(carry, batch)
        loss.backward()
    torch.cuda.synchronize()
    print(f"\nARC model, batch 64, bf16: {(time.perf_counter() - t0) / n * 1000:.1f} ms per ACT step (fwd+bwd)")
    assert torch.isfinite(loss)


def test_rope_tables_are_computed_on_the_device_the_model_moves_to(monkeypatch):
    # Upstream builds its model on the GPU, so its cos/sin come from the GPU's kernels; ours are recomputed
    # wherever the module is moved (here "meta", the one other device every machine has).
    import trm_core.layers as layers

    model = build_model(tiny_arch())
    seen, real = [], layers.rope_tables

    def recording(head_dim, max_positions, base, device=None):
        seen.append(str(device))
        return real(head_dim, max_positions, base, device)

    monkeypatch.setattr(layers, "rope_tables", recording)
    model.to("meta")
    assert seen == ["meta"] and model.inner.rotary_emb.cos_cached.device.type == "meta"
    monkeypatch.undo()
    model = build_model(tiny_arch()).to("cpu")
    rot = model.inner.rotary_emb
    cos, sin = real(rot.head_dim, rot.max_positions, rot.base, "cpu")
    assert torch.equal(rot.cos_cached, cos) and torch.equal(rot.sin_cached, sin)
    assert "inner.rotary_emb.cos_cached" not in model.state_dict()  # still never in a checkpoint


def test_attn_backend_sdpa_only_is_a_setting_and_flash_refuses_to_fall_back():
    from trm_core.config import ConfigError

    torch.manual_seed(0)
    model = build_model(tiny_arch(attn_backend="sdpa"))
    assert {m.backend for m in model.modules() if hasattr(m, "backend")} == {"sdpa"}
    auto = build_model(tiny_arch())
    auto.load_state_dict(model.state_dict())
    batch = make_batch(model.config)
    logits = predict(model, batch["inputs"], batch["puzzle_identifiers"])["logits"]  # on CPU auto is SDPA too
    torch.testing.assert_close(logits, predict(auto, batch["inputs"], batch["puzzle_identifiers"])["logits"],
                               rtol=0, atol=0)
    flash = build_model(tiny_arch(attn_backend="flash"))
    with pytest.raises(RuntimeError, match="flash-attn"):  # CPU fp32: flash cannot run, and says so
        predict(flash, batch["inputs"], batch["puzzle_identifiers"])
    with pytest.raises(ConfigError, match="attn_backend must be auto, sdpa or flash"):
        tiny_arch(attn_backend="xformers")
