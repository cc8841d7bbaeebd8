"""Building blocks of the TRM trunk, numerically identical to upstream's `models/layers.py` and `models/common.py`.

- `trunc_normal_init_`: JAX-style truncated normal whose realised std equals `std`.
- `rms_norm`: parameter-free RMSNorm computed in fp32 (TRM has no norm weights).
- `CastedLinear` / `CastedEmbedding`: fp32 master weights cast to the activation dtype at every call (no autocast),
  so bf16 on GPU and fp32 on CPU run the same module.
- `RotaryEmbedding` + `apply_rotary_pos_emb`: GPT-NeoX "half-split" RoPE over prefix + grid positions, in fp32,
  with its tables computed on the device the module lives on (as upstream, which builds its model on the GPU).
- `Attention`: non-causal multi-head attention through `F.scaled_dot_product_attention`; flash-attn is used only
  when installed, on CUDA, in bf16/fp16 (never required), unless `attn_backend="sdpa"` (upstream: SDPA only).
- `SwiGLU`: down(silu(gate) * up) with upstream's width rule (512 -> 1536).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from trm_core.config import swiglu_width


def trunc_normal_init_(tensor: torch.Tensor, std: float = 1.0, lower: float = -2.0, upper: float = 2.0) -> torch.Tensor:
    """Fill `tensor` with a truncated normal on [lower*std, upper*std] whose *actual* std is `std`.

    torch's `trunc_normal_` keeps the nominal std, so the samples come out ~12% narrower for +-2; upstream
    (following JAX) compensates. https://github.com/jax-ml/jax/blob/main/jax/_src/nn/initializers.py
    """
    with torch.no_grad():
        if std == 0:
            return tensor.zero_()
        sqrt2 = math.sqrt(2)
        a, b = math.erf(lower / sqrt2), math.erf(upper / sqrt2)
        z = (b - a) / 2
        c = (2 * math.pi) ** -0.5
        pdf_u, pdf_l = c * math.exp(-0.5 * lower**2), c * math.exp(-0.5 * upper**2)
        comp_std = std / math.sqrt(1 - (upper * pdf_u - lower * pdf_l) / z - ((pdf_u - pdf_l) / z) ** 2)
        tensor.uniform_(a, b)
        tensor.erfinv_()
        tensor.mul_(sqrt2 * comp_std)
        tensor.clip_(lower * comp_std, upper * comp_std)
    return tensor


def rms_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """x * rsqrt(mean(x^2) + eps) over the last axis, in fp32, cast back (no gain parameter)."""
    dtype = x.dtype
    x = x.float()
    x = x * torch.rsqrt(x.square().mean(-1, keepdim=True) + eps)
    return x.to(dtype)


class CastedLinear(nn.Module):
    """Linear layer with fp32 weights cast to the input's dtype; LeCun truncated-normal init, zero bias."""

    def __init__(self, in_features: int, out_features: int, bias: bool) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(trunc_normal_init_(torch.empty(out_features, in_features),
                                                      std=1.0 / math.sqrt(in_features)))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        return F.linear(x, self.weight.to(x.dtype), bias)


class CastedEmbedding(nn.Module):
    """Token embedding with an fp32 table cast to the forward dtype at lookup (upstream key: `embedding_weight`)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, init_std: float) -> None:
        super().__init__()
        self.embedding_weight = nn.Parameter(trunc_normal_init_(torch.empty(num_embeddings, embedding_dim),
                                                                std=init_std))

    def forward(self, ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return F.embedding(ids, self.embedding_weight.to(dtype))


def rope_tables(head_dim: int, max_positions: int, base: float,
                device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin), each (max_positions, head_dim) fp32, computed on `device` (None: torch's default device)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))
    t = torch.arange(max_positions, dtype=torch.float32, device=device)
    freqs = torch.outer(t, inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)  # (S, head_dim): [f_0..f_31, f_0..f_31], NOT interleaved
    return emb.cos(), emb.sin()


class RotaryEmbedding(nn.Module):
    """cos/sin tables for positions 0..max_positions-1 (prefix included), half-split layout, fp32.

    Upstream builds its model under `torch.device("cuda")`, so its tables come from the GPU's cos/sin, which
    differ from the CPU's in the last bits. Ours are recomputed on the device the module is moved to, so a model
    built on CPU and moved to the GPU holds the same tables as upstream's (non-persistent: never in a checkpoint).
    """

    def __init__(self, head_dim: int, max_positions: int, base: float) -> None:
        super().__init__()
        self.head_dim, self.max_positions, self.base = head_dim, max_positions, base
        cos, sin = rope_tables(head_dim, max_positions, base)
        self.register_buffer("cos_cached", cos, persistent=False)
        self.register_buffer("sin_cached", sin, persistent=False)

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)  # moves (or casts) the buffers; then compute them again where they now are
        device, dtype = self.cos_cached.device, self.cos_cached.dtype
        cos, sin = rope_tables(self.head_dim, self.max_positions, self.base, device)
        self.cos_cached, self.sin_cached = cos.to(dtype), sin.to(dtype)
        return self

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cos_cached, self.sin_cached


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """cat(-x2, x1) for x = cat(x1, x2) along the last axis."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """Rotate q, k of shape (B, S, H, D) by position; math in fp32 as upstream, result in the input dtype."""
    dtype = q.dtype
    q, k = q.to(cos.dtype), k.to(cos.dtype)
    cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)  # (S, 1, D) broadcasts over heads
    q = q * cos + rotate_half(q) * sin
    k = k * cos + rotate_half(k) * sin
    return q.to(dtype), k.to(dtype)


@functools.lru_cache(maxsize=1)
def _flash_attn_func():
    """flash_attn.flash_attn_func if the optional package imports, else None (looked up once)."""
    try:
        from flash_attn import flash_attn_func  # type: ignore[import-not-found]
    except Exception:  # noqa: BLE001 - any import failure (missing, ABI mismatch) means "not available"
        return None
    return flash_attn_func


ATTN_BACKENDS = ("auto", "sdpa", "flash")


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Non-causal attention on (B, S, H, D) tensors, returning (B, S, H, D).

    backend: "sdpa" = `F.scaled_dot_product_attention` only (upstream's code path, for parity checks);
    "auto" = flash-attn when it imports and the tensors are CUDA bf16/fp16, else SDPA; "flash" = flash-attn
    or an error. flash-attn takes (B, S, H, D) directly; SDPA wants (B, H, S, D). SDPA already dispatches to a
    flash kernel on recent GPUs, so flash-attn is a small optional gain, not a requirement.
    """
    if backend != "sdpa" and q.is_cuda and q.dtype in (torch.bfloat16, torch.float16):
        flash = _flash_attn_func()
        if flash is not None:
            return flash(q, k, v, causal=False)
    if backend == "flash":
        got = "no flash-attn installed" if _flash_attn_func() is None else f"{q.device.type} {q.dtype}"
        raise RuntimeError(f"attn_backend='flash' needs the flash-attn package and CUDA bf16/fp16 tensors; got {got}")
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=False)
    return out.transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention: qkv_proj rows are [Q | K | V], head h at rows h*D..h*D+D-1 in each."""

    def __init__(self, hidden_size: int, num_heads: int, backend: str = "auto") -> None:
        super().__init__()
        self.num_heads, self.backend = num_heads, backend
        self.head_dim = hidden_size // num_heads
        self.qkv_proj = CastedLinear(hidden_size, 3 * hidden_size, bias=False)
        self.o_proj = CastedLinear(hidden_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        B, S, _ = x.shape
        qkv = self.qkv_proj(x).view(B, S, 3 * self.num_heads, self.head_dim)  # (B, S, 3H, D)
        q, k, v = qkv.split(self.num_heads, dim=2)  # each (B, S, H, D)
        if cos_sin is not None:
            q, k = apply_rotary_pos_emb(q, k, *cos_sin)
        out = attention(q, k, v, self.backend).reshape(B, S, -1)  # (B, S, H*D)
        return self.o_proj(out)


class SwiGLU(nn.Module):
    """down(silu(gate) * up); `gate_up_proj` rows are [gate | up]."""

    def __init__(self, hidden_size: int, expansion: float) -> None:
        super().__init__()
        inter = swiglu_width(hidden_size, expansion)
        self.gate_up_proj = CastedLinear(hidden_size, 2 * inter, bias=False)
        self.down_proj = CastedLinear(inter, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)
