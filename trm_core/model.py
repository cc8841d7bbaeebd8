"""The Tiny Recursive Model: trunk, ACT wrapper, loss head and `predict`.

Module tree and parameter names follow upstream (SamsungSAILMontreal/TinyRecursiveModels,
`models/recursive_reasoning/trm.py`, `models/losses.py`), so `TRM.state_dict()` keys are upstream's keys after
`model.`: `inner.H_init`, `inner.L_level.layers.0.self_attn.qkv_proj.weight`, ...

    TRM (ACT wrapper: carry, halting, exploration)
      inner: TRMInner
        embed_tokens, lm_head, q_head, puzzle_emb (SparseEmbedding), rotary_emb | embed_pos,
        L_level (ReasoningModule: L_layers post-norm Blocks), H_init / L_init (bf16 buffers)
    ACTLossHead(TRM): loss + the metrics upstream logs

One ACT step runs H_cycles x (L_cycles + 1) applications of the shared L_level network; only the last H cycle
carries gradient (the paper's 1-step gradient approximation).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from trm_core.config import ArchConfig
from trm_core.layers import (Attention, CastedEmbedding, CastedLinear, RotaryEmbedding, SwiGLU, rms_norm,
                             trunc_normal_init_)
from trm_core.utils import resolve_dtype

IGNORE_LABEL_ID = -100


# ----------------------------------------------------------------------------------------------------------
# Puzzle embedding
# ----------------------------------------------------------------------------------------------------------

class SparseEmbedding(nn.Module):
    """Per-puzzle embedding table trained by sign-SGD on the rows of the batch only.

    The table is the persistent fp32 *buffer* `weights` (as upstream: it is not a Parameter, so AdamATan2 and
    EMA never see it). In training, each forward gathers `weights[ids]` into a fresh leaf with requires_grad and
    appends `(ids, leaf)` to `pending`; `optim.SignSGDSparseEmbedding.step()` consumes and clears `pending`. This
    works for several ACT steps or micro-batches per optimizer step, unlike upstream's fixed-size local buffer.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, init_std: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("weights", trunc_normal_init_(torch.empty(num_embeddings, embedding_dim), std=init_std))
        self.pending: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = self.weights[ids.long()]
        if self.training and torch.is_grad_enabled():
            rows = rows.detach().requires_grad_(True)
            self.pending.append((ids.detach(), rows))
        return rows


# ----------------------------------------------------------------------------------------------------------
# Trunk
# ----------------------------------------------------------------------------------------------------------

class Block(nn.Module):
    """Post-norm block: h = norm(h + mixer(h)); h = norm(h + mlp(h)). The mixer is attention or, with mlp_t,
    a SwiGLU across the sequence axis (then the first norm is over the sequence axis, as upstream)."""

    def __init__(self, config: ArchConfig) -> None:
        super().__init__()
        self.eps = config.rms_norm_eps
        self.use_mlp_t = config.mlp_t
        if config.mlp_t:
            self.mlp_t = SwiGLU(config.seq_len + config.prefix_len, config.expansion)
        else:
            self.self_attn = Attention(config.hidden_size, config.num_heads, config.attn_backend)
        self.mlp = SwiGLU(config.hidden_size, config.expansion)

    def forward(self, h: torch.Tensor, cos_sin) -> torch.Tensor:
        if self.use_mlp_t:
            h = h.transpose(1, 2)  # (B, D, S)
            h = rms_norm(h + self.mlp_t(h), self.eps)
            h = h.transpose(1, 2)  # (B, S, D)
        else:
            h = rms_norm(h + self.self_attn(h, cos_sin), self.eps)
        return rms_norm(h + self.mlp(h), self.eps)


class ReasoningModule(nn.Module):
    """f(h, injection) = blocks(h + injection); the same network updates both z_L and z_H."""

    def __init__(self, config: ArchConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Block(config) for _ in range(config.L_layers))

    def forward(self, h: torch.Tensor, injection: torch.Tensor, cos_sin) -> torch.Tensor:
        h = h + injection
        for layer in self.layers:
            h = layer(h, cos_sin)
        return h


class TRMInner(nn.Module):
    """One ACT step: embed, recurse, read out logits (grid positions) and q logits (prefix position 0)."""

    def __init__(self, config: ArchConfig) -> None:
        super().__init__()
        self.config = config
        self.prefix_len = config.prefix_len
        self.embed_scale = math.sqrt(config.hidden_size)
        self.embed_tokens = CastedEmbedding(config.vocab_size, config.hidden_size, init_std=1.0 / self.embed_scale)
        self.lm_head = CastedLinear(config.hidden_size, config.vocab_size, bias=False)
        self.q_head = CastedLinear(config.hidden_size, 2, bias=True)
        if config.puzzle_emb_ndim > 0:
            self.puzzle_emb = SparseEmbedding(config.num_puzzle_identifiers, config.puzzle_emb_ndim, init_std=0.0)
        total_len = config.seq_len + self.prefix_len
        if config.pos_encodings == "rope":
            self.rotary_emb = RotaryEmbedding(config.hidden_size // config.num_heads, total_len, config.rope_theta)
        elif config.pos_encodings == "learned":
            self.embed_pos = CastedEmbedding(total_len, config.hidden_size, init_std=1.0 / self.embed_scale)
        self.L_level = ReasoningModule(config)
        # Fixed random initial states, part of every published checkpoint. Upstream creates them in forward_dtype
        # (bf16 by default; fp32 models store fp32); "auto" keeps upstream's default bf16. A loaded file's
        # dtype wins (see _load_from_state_dict): rounding an fp32 H_init to bf16 moves logits by ~1e-2.
        init_dtype = torch.bfloat16 if config.forward_dtype == "auto" else getattr(torch, config.forward_dtype)
        self.register_buffer("H_init", trunc_normal_init_(torch.empty(config.hidden_size, dtype=init_dtype), std=1))
        self.register_buffer("L_init", trunc_normal_init_(torch.empty(config.hidden_size, dtype=init_dtype), std=1))
        # q_head starts "never halt" (sigmoid(-5) ~ 0.007) with a zero weight.
        with torch.no_grad():
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """H_init / L_init take the dtype they have in the state_dict (load_state_dict would cast them to ours)."""
        for name in ("H_init", "L_init"):
            value = state_dict.get(prefix + name)
            mine = getattr(self, name)
            if isinstance(value, torch.Tensor) and value.dtype != mine.dtype and value.shape == mine.shape:
                setattr(self, name, torch.empty_like(mine, dtype=value.dtype))  # still the registered buffer
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def input_embeddings(self, inputs: torch.Tensor, puzzle_identifiers: torch.Tensor, dtype: torch.dtype):
        """(B, S) tokens + (B,) ids -> (B, prefix + S, D): [puzzle prefix | tokens] * sqrt(D)."""
        cfg = self.config
        emb = self.embed_tokens(inputs.to(torch.int32), dtype)
        if cfg.grid_token_dropout > 0 and self.training:
            emb = F.dropout(emb, p=cfg.grid_token_dropout)
        B = emb.shape[0]
        if self.prefix_len > 0:
            if cfg.puzzle_emb_ndim > 0:
                pe = self.puzzle_emb(puzzle_identifiers)  # (B, ndim) fp32
                if cfg.puzzle_emb_dropout > 0 and self.training:
                    keep = 1.0 - cfg.puzzle_emb_dropout
                    pe = pe * (torch.rand(B, 1, device=pe.device) < keep).to(pe.dtype) / keep
                pad = self.prefix_len * cfg.hidden_size - cfg.puzzle_emb_ndim
                if pad > 0:
                    pe = F.pad(pe, (0, pad))  # position 0 carries the embedding, the rest are zeros
                prefix = pe.view(B, self.prefix_len, cfg.hidden_size).to(dtype)
            else:
                # Upstream crashes here (bug 9 in the reference); an all-zero prefix is the obvious meaning.
                prefix = emb.new_zeros(B, self.prefix_len, cfg.hidden_size)
            emb = torch.cat((prefix, emb), dim=-2)
        if cfg.pos_encodings == "learned":
            emb = 0.707106781 * (emb + self.embed_pos.embedding_weight.to(dtype))  # 1/sqrt(2) keeps the scale
        return self.embed_scale * emb

    def empty_carry(self, batch_size: int, device: torch.device, dtype: torch.dtype):
        shape = (batch_size, self.config.seq_len + self.prefix_len, self.config.hidden_size)
        return torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device)

    def reset_carry(self, reset: torch.Tensor, carry: tuple[torch.Tensor, torch.Tensor]):
        """Rows where `reset` is True restart from H_init / L_init."""
        z_H, z_L = carry
        r = reset.view(-1, 1, 1)
        return (torch.where(r, self.H_init.to(z_H.dtype), z_H), torch.where(r, self.L_init.to(z_L.dtype), z_L))

    def forward(self, carry: tuple[torch.Tensor, torch.Tensor], batch: dict[str, torch.Tensor],
                noise: float = 0.0, generator: torch.Generator | None = None):
        """One supervision step. Returns (new detached carry, logits (B, S, V), (q_halt, q_continue) fp32).

        noise > 0 (inference only, see `predict`): Gaussian noise of that standard deviation is added to z_L and
        z_H after every update of the recursion (PTRM's latent noise: diverse candidates from one model). The
        latents are RMS-normalised (RMS 1 per position), so `noise` is relative to their scale.
        """
        z_H, z_L = carry
        dtype = z_H.dtype
        cos_sin = self.rotary_emb() if self.config.pos_encodings == "rope" else None
        x = self.input_embeddings(batch["inputs"], batch["puzzle_identifiers"], dtype)
        H, L = self.config.H_cycles, self.config.L_cycles
        f = self.L_level
        if noise > 0:
            def jitter(z: torch.Tensor) -> torch.Tensor:
                return z + noise * torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
        else:
            def jitter(z: torch.Tensor) -> torch.Tensor:
                return z
        with torch.no_grad():
            for _ in range(H - 1):
                for _ in range(L):
                    z_L = jitter(f(z_L, z_H + x, cos_sin))
                z_H = jitter(f(z_H, z_L, cos_sin))
        # The last H cycle carries gradient (1-step gradient approximation).
        for _ in range(L):
            z_L = jitter(f(z_L, z_H + x, cos_sin))
        z_H = jitter(f(z_H, z_L, cos_sin))
        logits = self.lm_head(z_H)[:, self.prefix_len:]
        q = self.q_head(z_H[:, 0]).to(torch.float32)
        return (z_H.detach(), z_L.detach()), logits, (q[..., 0], q[..., 1])


# ----------------------------------------------------------------------------------------------------------
# ACT wrapper
# ----------------------------------------------------------------------------------------------------------

@dataclass
class Carry:
    inner: tuple[torch.Tensor, torch.Tensor]  # (z_H, z_L), each (B, prefix + S, D)
    steps: torch.Tensor  # (B,) int32
    halted: torch.Tensor  # (B,) bool
    current_data: dict[str, torch.Tensor]  # the examples currently held in each slot


class TRM(nn.Module):
    """The ACT wrapper: each call is one supervision step for every slot of the batch.

    Halted slots take the new batch row at the same index (and restart from H_init/L_init); the others keep
    their example. In training a slot halts when q_halt > 0 (or q_halt > q_continue with no_ACT_continue=False),
    exploration can delay halting, and halt_max_steps is a hard limit. In eval mode only the step limit
    (`halt_max_steps_eval`) counts, so every row runs the same number of steps.
    """

    def __init__(self, config: ArchConfig) -> None:
        super().__init__()
        self.config = config
        self.inner = TRMInner(config)

    @property
    def puzzle_emb(self) -> SparseEmbedding | None:
        return getattr(self.inner, "puzzle_emb", None)

    def forward_dtype(self, device: torch.device) -> torch.dtype:
        return resolve_dtype(self.config.forward_dtype, device)

    def initial_carry(self, batch: dict[str, torch.Tensor]) -> Carry:
        inputs = batch["inputs"]
        B, device = inputs.shape[0], inputs.device
        return Carry(
            inner=self.inner.empty_carry(B, device, self.forward_dtype(device)),
            steps=torch.zeros(B, dtype=torch.int32, device=device),
            halted=torch.ones(B, dtype=torch.bool, device=device),  # everything starts halted -> loads the batch
            current_data={k: torch.zeros_like(v) for k, v in batch.items()},
        )

    def forward(self, carry: Carry, batch: dict[str, torch.Tensor]) -> tuple[Carry, dict[str, torch.Tensor]]:
        cfg = self.config
        halted = carry.halted
        inner_carry = self.inner.reset_carry(halted, carry.inner)
        steps = torch.where(halted, 0, carry.steps)
        current = {k: torch.where(halted.view((-1,) + (1,) * (v.ndim - 1)), batch[k], v)
                   for k, v in carry.current_data.items()}

        inner_carry, logits, (q_halt, q_continue) = self.inner(inner_carry, current)
        outputs = {"logits": logits, "q_halt_logits": q_halt, "q_continue_logits": q_continue}

        with torch.no_grad():
            steps = steps + 1
            max_steps = cfg.halt_max_steps if self.training else cfg.eval_steps
            is_last = steps >= max_steps
            halted = is_last
            if self.training and cfg.halt_max_steps > 1:
                halted = halted | ((q_halt > 0) if cfg.no_ACT_continue else (q_halt > q_continue))
                # Exploration: with probability p, force at least U{2..halt_max_steps} steps.
                explore = torch.rand_like(q_halt) < cfg.halt_exploration_prob
                min_steps = explore * torch.randint_like(steps, low=2, high=cfg.halt_max_steps + 1)
                halted = halted & (steps >= min_steps)
                if not cfg.no_ACT_continue:
                    # Q-learning target for q_continue from the next step's q values (bootstrapped).
                    # Upstream unpacks 5 values from this 3-tuple and crashes; this is the intended computation.
                    _, _, (next_halt, next_continue) = self.inner(inner_carry, current)
                    outputs["target_q_continue"] = torch.sigmoid(
                        torch.where(is_last, next_halt, torch.maximum(next_halt, next_continue)))
        return Carry(inner_carry, steps, halted, current), outputs

    def run_steps(self, batch: dict[str, torch.Tensor], steps: int, noise: float = 0.0,
                  generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Run `steps` supervision steps on a fresh carry with no halting logic (inference); `noise`: latent
        noise in the recursion (`TRMInner.forward`), 0 = the deterministic forward."""
        inputs = batch["inputs"]
        device = inputs.device
        carry = self.inner.empty_carry(inputs.shape[0], device, self.forward_dtype(device))
        carry = self.inner.reset_carry(torch.ones(inputs.shape[0], dtype=torch.bool, device=device), carry)
        for _ in range(steps):
            if noise > 0:
                carry, logits, (q_halt, q_continue) = self.inner(carry, batch, noise, generator)
            else:
                carry, logits, (q_halt, q_continue) = self.inner(carry, batch)
        return {"logits": logits, "q_halt_logits": q_halt, "q_continue_logits": q_continue}


def build_model(config: ArchConfig) -> TRM:
    """A freshly initialised TRM (fp32 master weights, on CPU)."""
    return TRM(config)


# ----------------------------------------------------------------------------------------------------------
# Losses and the training head
# ----------------------------------------------------------------------------------------------------------

def log_stablemax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """log(s(x) / sum s(x)) with s(x) = 1/(1-x) for x < 0, x + 1 otherwise (upstream's stablemax).

    Upstream writes 1/(1 - x + 1e-30) over all x and selects with `where`; for x = 1 the discarded branch is
    1e30 and its gradient 1e60, which overflows fp32 into 0 * inf = NaN. Clamping the negative branch's input
    gives the same values (1 - x >= 1 there) and a finite gradient in any dtype.
    """
    s = torch.where(x < 0, 1.0 / (1.0 - x.clamp(max=0)), x + 1)
    return torch.log(s / s.sum(dim=dim, keepdim=True))


def stablemax_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, dtype: torch.dtype = torch.float32):
    """Per-token -log stablemax[label]; 0 where label == IGNORE_LABEL_ID. Shape of `labels`."""
    logprobs = log_stablemax(logits.to(dtype), dim=-1)
    valid = labels != IGNORE_LABEL_ID
    gathered = torch.gather(logprobs, -1, torch.where(valid, labels, 0).long().unsqueeze(-1)).squeeze(-1)
    return -torch.where(valid, gathered, 0)


def softmax_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, dtype: torch.dtype = torch.float32):
    """Per-token softmax cross-entropy; 0 where label == IGNORE_LABEL_ID. (Upstream's version crashes.)"""
    flat = F.cross_entropy(logits.to(dtype).flatten(0, -2), labels.long().flatten(),
                           ignore_index=IGNORE_LABEL_ID, reduction="none")
    return flat.view(labels.shape)


LOSSES = {"stablemax_cross_entropy": stablemax_cross_entropy, "softmax_cross_entropy": softmax_cross_entropy}


def row_metrics(preds: torch.Tensor, labels: torch.Tensor, q_halt: torch.Tensor,
                halted: torch.Tensor) -> dict[str, torch.Tensor]:
    """Upstream ACTLossHead's per-row quantities, (B,) each: `valid` (halted with >= 1 label: the rows metrics
    count), token `accuracy`, `exact` (every label right), `q_halt_correct` ((q_halt >= 0) == exact), and
    `divisor` (B, 1) = max(1, labels) for per-row means. Shared by training and evaluation metrics."""
    mask = labels != IGNORE_LABEL_ID
    counts = mask.sum(-1)
    divisor = counts.clamp_min(1).unsqueeze(-1)
    correct = mask & (preds == labels)
    exact = correct.sum(-1) == counts
    return {"valid": halted & (counts > 0), "accuracy": (correct.float() / divisor).sum(-1), "exact": exact,
            "q_halt_correct": (q_halt >= 0) == exact, "divisor": divisor}


class ACTLossHead(nn.Module):
    """Wraps a TRM for training: total = lm_loss + 0.5 * (q_halt_loss + q_continue_loss), summed over the batch.

    Metrics (sums; divide by `count`, losses by the batch size) are upstream's: count, accuracy, exact_accuracy,
    q_halt_accuracy, steps over the rows that halted this step with at least one label, plus lm_loss and
    q_halt_loss (and q_continue_loss when no_ACT_continue=False).
    """

    def __init__(self, model: TRM) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = LOSSES[model.config.loss_type]
        self.loss_dtype = getattr(torch, model.config.loss_dtype)

    def initial_carry(self, batch: dict[str, torch.Tensor]) -> Carry:
        return self.model.initial_carry(batch)

    def forward(self, carry: Carry, batch: dict[str, torch.Tensor], return_keys: tuple[str, ...] = ()):
        carry, outputs = self.model(carry, batch)
        labels = carry.current_data["labels"]
        logits = outputs["logits"]
        q_halt = outputs["q_halt_logits"]

        with torch.no_grad():
            outputs["preds"] = logits.argmax(-1)
            rows = row_metrics(outputs["preds"], labels, q_halt, carry.halted)
            valid, seq_correct, divisor = rows["valid"], rows["exact"], rows["divisor"]
            metrics = {
                "count": valid.sum(),
                "accuracy": torch.where(valid, rows["accuracy"], 0).sum(),
                "exact_accuracy": (valid & seq_correct).sum(),
                "q_halt_accuracy": (valid & rows["q_halt_correct"]).sum(),
                "steps": torch.where(valid, carry.steps, 0).sum(),
            }

        lm_loss = (self.loss_fn(logits, labels, self.loss_dtype) / divisor).sum()
        q_halt_loss = F.binary_cross_entropy_with_logits(q_halt, seq_correct.to(q_halt.dtype), reduction="sum")
        metrics["lm_loss"] = lm_loss.detach()
        metrics["q_halt_loss"] = q_halt_loss.detach()
        total = lm_loss + 0.5 * q_halt_loss
        if "target_q_continue" in outputs:
            q_continue_loss = F.binary_cross_entropy_with_logits(
                outputs["q_continue_logits"], outputs["target_q_continue"], reduction="sum")
            metrics["q_continue_loss"] = q_continue_loss.detach()
            total = total + 0.5 * q_continue_loss
        detached = {k: outputs[k].detach() for k in return_keys if k in outputs}
        return carry, total, metrics, detached, carry.halted.all()


# ----------------------------------------------------------------------------------------------------------
# Inference
# ----------------------------------------------------------------------------------------------------------

@torch.inference_mode()
def predict(model: TRM, inputs: torch.Tensor, puzzle_identifiers: torch.Tensor,
            steps: int | None = None, *, noise: float = 0.0,
            generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Run `steps` ACT steps (default: halt_max_steps_eval or halt_max_steps) in eval mode.

    Args:
        model: a `TRM` (e.g. from `trm_core.load_checkpoint`).
        inputs: (B, seq_len) token ids; puzzle_identifiers: (B,) ids into the model's puzzle table.
        noise: standard deviation of Gaussian noise added to the latents after every recursion update (0 = the
            deterministic forward); `generator` draws it (on the model's device), for repeatable samples.
    Returns:
        dict with `logits` (B, seq_len, vocab) fp32, `preds` (B, seq_len) int64, `q_halt_logits` and
        `q_continue_logits` (B,) fp32.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    batch = {"inputs": torch.as_tensor(inputs, device=device).to(torch.int32),
             "puzzle_identifiers": torch.as_tensor(puzzle_identifiers, device=device).to(torch.int32)}
    if noise > 0:
        out = model.run_steps(batch, steps or model.config.eval_steps, noise, generator)
    else:
        out = model.run_steps(batch, steps or model.config.eval_steps)
    model.train(was_training)
    logits = out["logits"].float()
    return {"logits": logits, "preds": logits.argmax(-1), "q_halt_logits": out["q_halt_logits"],
            "q_continue_logits": out["q_continue_logits"]}


# ----------------------------------------------------------------------------------------------------------
# Parameter names
# ----------------------------------------------------------------------------------------------------------

KEY_PREFIX_RE = re.compile(r"^((?:_orig_mod\.|model\.)+)(?=inner\.)")


def canonical_key(key: str) -> str:
    """One name per tensor, the one mapping of foreign parameter names (checkpoints and LoRA adapters use it):
    strip `_orig_mod.` / `model.` before `inner.`; the fork's `X._lora_A` -> `X.lora_A`.

    `_orig_mod.model.inner.X`, `model.inner.X`, `_orig_mod.inner.X` and `inner.X` all become `inner.X`.
    """
    key = KEY_PREFIX_RE.sub("", key, count=1)
    return re.sub(r"\._lora_([AB])$", r".lora_\1", key)
