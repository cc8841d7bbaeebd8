"""LoRA: no-op at init, merge/unmerge equivalence, upstream-compatible names, adapter-only state dicts."""

from __future__ import annotations

import io

import pytest
import torch
from conftest import tiny_arch

from trm_core.config import ArchConfig
from trm_core.lora import (LoRALinear, LoraConfig, adapter_state_dict, apply_lora, load_adapter_state_dict,
                           lora_layers, lora_parameters, merge_lora, unmerge_lora)
from trm_core.model import build_model, predict


def tiny_model(seed=0, **overrides):
    torch.manual_seed(seed)
    return build_model(tiny_arch(H_cycles=1, L_cycles=1, halt_max_steps=2, **overrides))


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 12, (3, 16), generator=g), torch.tensor([1, 2, 7])


def randomize_adapters(model, scale=0.05):
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for p in lora_parameters(model):
            p.copy_(torch.randn(p.shape, generator=g) * scale)


def test_fresh_adapter_is_a_no_op():
    model = tiny_model()
    inputs, ids = batch()
    before = predict(model, inputs, ids)["logits"]
    apply_lora(model, LoraConfig(rank=2, alpha=4.0))
    torch.testing.assert_close(predict(model, inputs, ids)["logits"], before, rtol=0, atol=0)


def test_lora_wraps_every_linear_of_the_trunk_and_heads_by_default():
    model = apply_lora(tiny_model(), LoraConfig())
    names = sorted(lora_layers(model))
    assert names == ["inner.L_level.layers.0.mlp.down_proj", "inner.L_level.layers.0.mlp.gate_up_proj",
                     "inner.L_level.layers.0.self_attn.o_proj", "inner.L_level.layers.0.self_attn.qkv_proj",
                     "inner.lm_head", "inner.q_head"]


def test_merge_then_forward_equals_unmerged_forward_and_unmerge_restores_base():
    model = apply_lora(tiny_model(), LoraConfig(rank=2, alpha=4.0))
    randomize_adapters(model)
    inputs, ids = batch()
    base_weights = {n: l.base_layer.weight.detach().clone() for n, l in lora_layers(model).items()}
    unmerged = predict(model, inputs, ids)["logits"]
    merge_lora(model)
    assert all(layer.merged for layer in lora_layers(model).values())
    torch.testing.assert_close(predict(model, inputs, ids)["logits"], unmerged, rtol=0, atol=1e-5)
    unmerge_lora(model)
    for n, layer in lora_layers(model).items():
        assert torch.equal(layer.base_layer.weight, base_weights[n])
    torch.testing.assert_close(predict(model, inputs, ids)["logits"], unmerged, rtol=0, atol=0)


def test_merge_is_idempotent():
    model = apply_lora(tiny_model(), LoraConfig(rank=1))
    randomize_adapters(model)
    merge_lora(model)
    once = {n: l.base_layer.weight.detach().clone() for n, l in lora_layers(model).items()}
    merge_lora(model)
    for n, layer in lora_layers(model).items():
        assert torch.equal(layer.base_layer.weight, once[n])


def test_disabled_adapter_gives_the_base_output():
    model = tiny_model()
    inputs, ids = batch()
    base = predict(model, inputs, ids)["logits"]
    apply_lora(model, LoraConfig())
    randomize_adapters(model)
    merge_lora(model)
    for layer in lora_layers(model).values():
        layer.disabled = True
    torch.testing.assert_close(predict(model, inputs, ids)["logits"], base, rtol=0, atol=1e-6)


def test_full_state_dict_keeps_upstream_names_plus_adapters_and_unmerged_weights():
    plain = tiny_model()
    model = apply_lora(tiny_model(), LoraConfig())
    randomize_adapters(model)
    merge_lora(model)
    sd = model.state_dict()
    plain_keys = set(plain.state_dict())
    lora_keys = {k for k in sd if k.endswith((".lora_A", ".lora_B"))}
    assert set(sd) - lora_keys == plain_keys
    assert "inner.L_level.layers.0.self_attn.qkv_proj.lora_A" in lora_keys
    assert not any("base_layer" in k for k in sd)
    layer = lora_layers(model)["inner.lm_head"]
    assert torch.equal(sd["inner.lm_head.weight"], layer._unmerged_weight)

    # Loading it into a fresh LoRA model reproduces the outputs.
    fresh = apply_lora(tiny_model(seed=5), LoraConfig())
    fresh.load_state_dict(sd)
    inputs, ids = batch()
    torch.testing.assert_close(predict(fresh, inputs, ids)["logits"], predict(model, inputs, ids)["logits"],
                               rtol=0, atol=1e-5)


def test_trainable_parameters_are_exactly_adapters_and_embeddings():
    model = apply_lora(tiny_model(), LoraConfig(train_embeddings=True))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    adapters = {n for n in trainable if n.endswith((".lora_A", ".lora_B"))}
    assert trainable - adapters == {"inner.embed_tokens.embedding_weight"}
    assert len(adapters) == 2 * len(lora_layers(model))
    frozen_emb = apply_lora(tiny_model(), LoraConfig(train_embeddings=False))
    assert {n for n, p in frozen_emb.named_parameters() if p.requires_grad} == \
        {n for n, _ in frozen_emb.named_parameters() if n.endswith((".lora_A", ".lora_B"))}


def test_adapter_state_dict_holds_only_adapters_and_loads_back():
    model = apply_lora(tiny_model(), LoraConfig(rank=2))
    randomize_adapters(model)
    sd = adapter_state_dict(model)
    assert set(sd) == {n for n, _ in model.named_parameters() if n.endswith((".lora_A", ".lora_B"))} | \
        {"inner.embed_tokens.embedding_weight"}
    other = apply_lora(tiny_model(), LoraConfig(rank=2))
    load_adapter_state_dict(other, sd)
    inputs, ids = batch()
    torch.testing.assert_close(predict(other, inputs, ids)["logits"], predict(model, inputs, ids)["logits"],
                               rtol=0, atol=0)


def test_adapter_state_dict_of_the_arc_model_at_rank_1_is_small():
    arc = ArchConfig(num_puzzle_identifiers=2, forward_dtype="float32")  # hidden 512, 8 heads, 2 layers
    model = apply_lora(build_model(arc), LoraConfig(rank=1))
    buf = io.BytesIO()
    torch.save(adapter_state_dict(model), buf)
    n_adapter = sum(p.numel() for p in lora_parameters(model))
    assert n_adapter == 18_446  # fork: ~18.4k adapter parameters at rank 1
    assert buf.tell() < 200_000  # ~100 KB (adapters 74 KB + token embedding 24 KB) vs ~27 MB for the trunk


@pytest.mark.parametrize("prefix", ["_orig_mod.model.", "model.", ""])
def test_fork_named_adapter_keys_load(prefix):
    model = apply_lora(tiny_model(), LoraConfig())
    randomize_adapters(model)
    fork_sd = {prefix + k.replace(".lora_A", "._lora_A").replace(".lora_B", "._lora_B"): v
               for k, v in adapter_state_dict(model).items()}
    assert any(k.endswith("qkv_proj._lora_A") for k in fork_sd)
    other = apply_lora(tiny_model(), LoraConfig())
    load_adapter_state_dict(other, fork_sd)
    for (n, a), (_, b) in zip(sorted(lora_layers(model).items()), sorted(lora_layers(other).items())):
        assert torch.equal(a.lora_A, b.lora_A) and torch.equal(a.lora_B, b.lora_B)


def test_adapter_state_dict_with_missing_or_foreign_keys_is_refused():
    model = apply_lora(tiny_model(), LoraConfig())
    sd = adapter_state_dict(model)
    sd.pop("inner.lm_head.lora_A")
    with pytest.raises(ValueError, match="missing.*lm_head.lora_A"):
        load_adapter_state_dict(model, sd)
    with pytest.raises(ValueError, match="rank"):
        load_adapter_state_dict(apply_lora(tiny_model(), LoraConfig(rank=3)), adapter_state_dict(model))


def test_lora_linear_computes_base_plus_scaled_low_rank_update():
    from trm_core.layers import CastedLinear

    torch.manual_seed(0)
    base = CastedLinear(6, 5, bias=True)
    layer = LoRALinear(base, rank=2, alpha=8.0)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(4, 6)
    expected = x @ base.weight.T + base.bias + (x @ layer.lora_A.T @ layer.lora_B.T) * 4.0
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


def test_lora_config_rejects_unknown_targets():
    with pytest.raises(ValueError, match="attn"):
        LoraConfig(target=("attn",))


def test_lora_delta_is_computed_in_fp32_and_cast_as_the_fork_does_in_bf16():
    import torch.nn.functional as F

    from trm_core.layers import CastedLinear

    torch.manual_seed(0)
    base = CastedLinear(64, 48, bias=True)
    layer = LoRALinear(base, rank=1, alpha=16.0)
    with torch.no_grad():
        layer.lora_B.normal_(0, 0.02)
    x = torch.randn(32, 64).to(torch.bfloat16)
    out = layer(x)
    # fork (models/layers.py CastedLinear.forward): result + F.linear(F.linear(x.to(fp32), A), B).to(bf16) * s
    fork = base(x) + F.linear(F.linear(x.float(), layer.lora_A), layer.lora_B).to(torch.bfloat16) * 16.0
    assert out.dtype == torch.bfloat16 and torch.equal(out, fork)
    in_bf16 = base(x) + F.linear(F.linear(x, layer.lora_A.to(torch.bfloat16)),
                                 layer.lora_B.to(torch.bfloat16)) * 16.0
    assert not torch.equal(out, in_bf16)  # what the adapters computed before: the update's low bits lost
