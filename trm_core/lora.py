"""LoRA (arXiv 2106.09685) as a wrapper around the trunk's `CastedLinear` layers, compatible with the Trelis fork.

`apply_lora(model, LoraConfig(...))` replaces each targeted `CastedLinear` by a `LoRALinear` that keeps the
original layer untouched as `base_layer` and adds `lora_A` (r, in) and `lora_B` (out, r):

    y = base(x) + (dropout(x) @ A^T @ B^T) * alpha / r        (B = 0 at start: a fresh adapter is a no-op)

The adapter product runs in fp32 and is cast to the activation dtype before the scale, as the fork computes it
(fork: models/layers.py `CastedLinear.forward`); in bf16 the small update would lose its low bits (about 4% of a
small model's argmaxes flip).

State-dict names (a public interface). The full model state_dict stays upstream-compatible: the base weight keeps
its key (`inner.L_level.layers.0.self_attn.qkv_proj.weight`, not `...qkv_proj.base_layer.weight`) and the
adapters sit beside it as `...qkv_proj.lora_A` / `...qkv_proj.lora_B`. The fork's names (`..._lora_A`,
`..._lora_B`, with `_orig_mod.model.` / `model.` prefixes) go through `trm_core.model.canonical_key`.
A merged layer still saves its *unmerged* base weight, so a state_dict never holds the delta twice; loading a
state_dict into a merged layer unmerges it.

Defaults follow the fork (fork: models/lora.py, models/layers.py): every linear of the trunk plus `lm_head` and
`q_head`, rank 1, alpha 16; the token embedding stays trainable, everything else is frozen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from trm_core.layers import CastedLinear
from trm_core.model import canonical_key

LORA_TARGETS = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj", "lm_head", "q_head")


@dataclass
class LoraConfig:
    rank: int = 1  # adapter rank r; the fork's runs use 1 (32 was tried); higher = more capacity and memory
    alpha: float = 16.0  # scaling = alpha / rank (fork: 16 -> scaling 16 at rank 1)
    dropout: float = 0.0  # dropout on the adapter's input only (training)
    # attribute names of the CastedLinear layers to adapt (`gate_up_proj` also matches mlp_t's layers)
    target: tuple[str, ...] = field(default_factory=lambda: LORA_TARGETS)
    train_embeddings: bool = True  # also train `embed_tokens` (fork: it stays trainable in LoRA mode)

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"LoraConfig.rank must be >= 1, got {self.rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoraConfig.dropout must be in [0, 1), got {self.dropout}")
        unknown = sorted(set(self.target) - set(LORA_TARGETS))
        if unknown:
            raise ValueError(f"LoraConfig.target: unknown module name(s) {unknown}; known: {list(LORA_TARGETS)}")
        self.target = tuple(self.target)

    def to_dict(self) -> dict:
        return {"rank": self.rank, "alpha": self.alpha, "dropout": self.dropout, "target": list(self.target),
                "train_embeddings": self.train_embeddings}


class LoRALinear(nn.Module):
    """A `CastedLinear` plus a low-rank adapter; merge()/unmerge() fold the adapter in and out of the weight."""

    def __init__(self, base_layer: CastedLinear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.rank, self.alpha, self.scaling = rank, alpha, alpha / rank
        device = base_layer.weight.device
        self.lora_A = nn.Parameter(torch.empty(rank, base_layer.in_features, device=device))  # (r, in)
        self.lora_B = nn.Parameter(torch.zeros(base_layer.out_features, rank, device=device))  # (out, r)
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear / the LoRA paper / the fork
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.disabled = False
        # The merged state lives here only: the base weight as it was before merge(), or None when unmerged.
        self._unmerged_weight: torch.Tensor | None = None
        self.register_state_dict_post_hook(_save_unmerged_base_under_its_own_key)
        self.register_load_state_dict_pre_hook(_load_base_from_its_own_key)

    @property
    def merged(self) -> bool:
        return self._unmerged_weight is not None

    def delta_weight(self) -> torch.Tensor:
        """scaling * B @ A, in fp32 (bf16/fp16 products lose the small adapter update)."""
        return (self.lora_B.float() @ self.lora_A.float()) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the adapter into the base weight (idempotent); forward then costs one matmul."""
        if self.merged:
            return
        w = self.base_layer.weight
        self._unmerged_weight = w.detach().clone()
        w.copy_((w.float() + self.delta_weight()).to(w.dtype))

    @torch.no_grad()
    def unmerge(self) -> None:
        """Restore the exact base weight saved by merge()."""
        if not self.merged:
            return
        self.base_layer.weight.copy_(self._unmerged_weight)
        self._unmerged_weight = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.disabled and self.merged:
            self.unmerge()
        out = self.base_layer(x)
        if self.disabled or self.merged:
            return out
        # The fork's numerics: dropout on the activations, the low-rank product in fp32, cast back, then scaled.
        lora = F.linear(F.linear(self.dropout(x).to(torch.float32), self.lora_A.float()), self.lora_B.float())
        return out + lora.to(out.dtype) * self.scaling

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha}, merged={self.merged}, disabled={self.disabled}"


def _save_unmerged_base_under_its_own_key(module: LoRALinear, state_dict: dict, prefix: str, local_metadata) -> None:
    """`prefix.base_layer.weight` -> `prefix.weight` (upstream's key); the unmerged weight if merged."""
    for name in ("weight", "bias"):
        old = f"{prefix}base_layer.{name}"
        if old in state_dict:
            value = state_dict.pop(old)
            if name == "weight" and module.merged:
                value = module._unmerged_weight
            state_dict[prefix + name] = value
    if hasattr(state_dict, "move_to_end"):  # keep weight, bias, lora_A, lora_B together in this order
        for name in ("lora_A", "lora_B"):
            state_dict.move_to_end(prefix + name)


def _load_base_from_its_own_key(module: LoRALinear, state_dict: dict, prefix: str, local_metadata, strict,
                                missing_keys, unexpected_keys, error_msgs) -> None:
    """The inverse rename on load; a merged layer is unmerged first (the loaded weight is the unmerged one)."""
    if any(k.startswith(prefix) for k in state_dict):
        module.unmerge()
    for name in ("weight", "bias"):
        if prefix + name in state_dict:
            state_dict[f"{prefix}base_layer.{name}"] = state_dict.pop(prefix + name)


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """Module path -> LoRALinear, for every adapted layer."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def apply_lora(model: nn.Module, cfg: LoraConfig) -> nn.Module:
    """Wrap the targeted CastedLinear layers of `model` (a TRM) in place and set what trains.

    Every base weight is frozen; adapters train; `inner.embed_tokens` trains iff `cfg.train_embeddings`.
    (The puzzle table is a buffer trained by sign-SGD, unaffected.) Returns `model`, with `model.lora_config`.
    """
    if lora_layers(model):
        raise ValueError("apply_lora: the model already has LoRA adapters")
    targets = [(name, m) for name, m in model.named_modules()
               if isinstance(m, CastedLinear) and name.rsplit(".", 1)[-1] in cfg.target]
    if not targets:
        raise ValueError(f"apply_lora: no CastedLinear named {list(cfg.target)} in the model")
    for p in model.parameters():
        p.requires_grad_(False)
    for name, base in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, LoRALinear(base, cfg.rank, cfg.alpha, cfg.dropout))
    embed = getattr(getattr(model, "inner", model), "embed_tokens", None)
    if embed is not None:
        embed.requires_grad_(cfg.train_embeddings)
    model.lora_config = cfg
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    for layer in lora_layers(model).values():
        layer.merge()
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    for layer in lora_layers(model).values():
        layer.unmerge()
    return model


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The adapter matrices (declared by LoRALinear, not found by name matching)."""
    return [p for layer in lora_layers(model).values() for p in (layer.lora_A, layer.lora_B)]


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Adapters only (`<layer>.lora_A`, `<layer>.lora_B`), plus `inner.embed_tokens.embedding_weight` when it
    trains: a few hundred KB for the ARC model at rank 1, against ~27 MB for the trunk."""
    sd = {}
    for name, layer in lora_layers(model).items():
        sd[f"{name}.lora_A"] = layer.lora_A.detach().cpu().clone()
        sd[f"{name}.lora_B"] = layer.lora_B.detach().cpu().clone()
    cfg = getattr(model, "lora_config", None)
    for name, p in model.named_parameters():
        if name.endswith("embed_tokens.embedding_weight") and cfg is not None and cfg.train_embeddings:
            sd[name] = p.detach().cpu().clone()
    return sd


def load_adapter_state_dict(model: nn.Module, sd: dict[str, torch.Tensor]) -> None:
    """Load adapters (ours or the fork's names) into a model that went through `apply_lora`; every adapter of
    the model must be given, and nothing else but the token embedding is accepted."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError("load_adapter_state_dict: the model has no LoRA layers; call apply_lora first")
    own = dict(model.named_parameters())
    wanted = {f"{n}.lora_{ab}" for n in layers for ab in "AB"}
    given = {canonical_key(k): v for k, v in sd.items()}
    unexpected = sorted(k for k in given if k not in wanted and not k.endswith("embed_tokens.embedding_weight"))
    missing = sorted(wanted - set(given))
    if missing or unexpected:
        raise ValueError(f"adapter state_dict does not match the model: missing {missing[:10]}, "
                         f"unexpected {unexpected[:10]}")
    with torch.no_grad():
        for key, value in given.items():
            layer_name, _, attr = key.rpartition(".")
            target = getattr(layers[layer_name], attr) if key in wanted else own[key]
            if target.shape != value.shape:
                raise ValueError(f"adapter {key}: shape {tuple(value.shape)} in the file, "
                                 f"{tuple(target.shape)} in the model (different rank?)")
            if key in wanted:
                layers[layer_name].unmerge()  # a merged layer's weight must not keep the old delta
            target.copy_(value)


__all__ = ["LORA_TARGETS", "LoRALinear", "LoraConfig", "adapter_state_dict", "apply_lora",
           "load_adapter_state_dict", "lora_layers", "lora_parameters", "merge_lora", "unmerge_lora"]
