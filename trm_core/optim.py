"""Optimizers, the learning-rate schedule and EMA, with upstream's exact update rules.

- `AdamATan2`: Adam with atan2 instead of the epsilon division (arXiv 2407.05872), as in upstream's `adam-atan2`
  0.0.3 CUDA extension: no epsilon, a = b = 1, decoupled weight decay. Pure PyTorch (CPU and GPU); a
  `torch._foreach_*` path for many tensors; the fused `adam_atan2_backend` kernel only if it imports and the
  parameters are on CUDA.
- `AdamATan2Pytorch`: the update of the `adam-atan2-pytorch` package (a = 1.27, bias corrections inside atan2),
  which the Trelis fork trains with; its recipes' learning rates assume it (`optimizer: adam_atan2_pytorch`).
- `SignSGDSparseEmbedding`: sign-SGD on the rows of the puzzle-embedding table that the batch used (upstream's
  `CastedSparseEmbeddingSignSGD_Distributed`), all-gathered across ranks.
- `lr_at_step`: upstream's `cosine_schedule_with_warmup_lr_lambda` (linear warmup, cosine down to `min_ratio`).
- `EMA`: exponential moving average of the trainable parameters (never the puzzle table, which is a buffer),
  swapped in with a context manager instead of upstream's deep copy of the whole train state.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from trm_core.dist import DistInfo, all_gather_cat

# ----------------------------------------------------------------------------------------------------------
# AdamATan2
# ----------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _fused_backend():
    """The compiled `adam_atan2_backend` module of the `adam-atan2` package, or None (looked up once)."""
    try:
        import adam_atan2_backend  # type: ignore[import-not-found]
    except Exception:  # noqa: BLE001 - missing, or built against another torch/CUDA: not available
        return None
    return adam_atan2_backend if hasattr(adam_atan2_backend, "adam_atan2_cuda_impl_") else None


class AdamATan2(torch.optim.Optimizer):
    """Adam-atan2 with upstream's update, per element in fp32 (t = this parameter's step count, from 1):

        p *= 1 - lr * wd
        m  = lerp(m, g,   1 - b1)
        v  = lerp(v, g^2, 1 - b2)
        p -= lr / (1 - b1^t) * atan2(m, sqrt(v) / sqrt(1 - b2^t))

    atan2 bounds every step by lr * pi/2 / (1 - b1^t) and needs no epsilon. The trainer sets `lr` in
    `param_groups` every step, so `lr=0` is a valid construction value (upstream builds it that way).

    Args:
        params: parameters or parameter groups.
        lr, betas, weight_decay: as above (upstream ARC: lr 1e-4 after warmup, (0.9, 0.95), 0.1).
        foreach: use `torch._foreach_*` ops over all fp32 tensors of a device; None = only on CUDA (on CPU the
            foreach ops are per-tensor loops, so the reference path is as fast).
        fused: use the `adam-atan2` CUDA extension; None = when it imports and the parameters are on CUDA.
    """

    def __init__(self, params: Iterable, lr: float = 0.0, betas: tuple[float, float] = (0.9, 0.95),
                 weight_decay: float = 0.1, *, foreach: bool | None = None, fused: bool | None = None) -> None:
        if not (isinstance(lr, (int, float)) and lr >= 0.0):
            raise ValueError(f"AdamATan2: lr must be a number >= 0, got {lr!r}")
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"AdamATan2: betas must be two numbers in [0, 1), got {betas!r}")
        if not weight_decay >= 0.0:
            raise ValueError(f"AdamATan2: weight_decay must be >= 0, got {weight_decay!r}")
        if fused and _fused_backend() is None:
            raise ValueError("AdamATan2: fused=True needs the adam-atan2 CUDA extension, which does not import")
        super().__init__(params, dict(lr=float(lr), betas=tuple(betas), weight_decay=float(weight_decay)))
        self.foreach, self.fused = foreach, fused

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            for p in params:
                if p.grad.is_sparse:
                    raise RuntimeError("AdamATan2 does not support sparse gradients")
                state = self.state[p]
                if not state:
                    # Same state layout as the adam-atan2 package, so either path can resume the other.
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32,
                                                           memory_format=torch.preserve_format)
            fast, slow = [], []
            for p in params:
                ok = p.dtype == torch.float32 and p.grad.dtype == torch.float32
                (fast if ok else slow).append(p)
            by_device: dict[torch.device, list[nn.Parameter]] = {}
            for p in fast:
                by_device.setdefault(p.device, []).append(p)
            for device, ps in by_device.items():
                on_cuda = device.type == "cuda"
                if (self.fused if self.fused is not None else on_cuda) and on_cuda and _fused_backend() is not None:
                    self._fused_step(ps, group)
                elif self.foreach if self.foreach is not None else on_cuda:
                    self._foreach_step(ps, group)
                else:
                    slow.extend(ps)
            for p in slow:
                self._reference_step(p, group)
        return loss

    def _reference_step(self, p: torch.Tensor, group: dict) -> None:
        """One tensor, written exactly as the formula (any param dtype; math in fp32)."""
        lr, wd = group["lr"], group["weight_decay"]
        b1, b2 = group["betas"]
        state = self.state[p]
        state["step"] += 1
        t = state["step"].item()
        m, v = state["exp_avg"], state["exp_avg_sq"]
        x, g = p.float(), p.grad.float()
        x.mul_(1 - lr * wd)
        m.lerp_(g, 1 - b1)
        v.lerp_(g.square(), 1 - b2)
        step_size = lr / (1 - b1**t)
        x.add_(torch.atan2(m, v.sqrt() / math.sqrt(1 - b2**t)), alpha=-step_size)
        if x is not p:
            p.copy_(x)

    def _foreach_step(self, params: list[torch.Tensor], group: dict) -> None:
        """Same math as `_reference_step`, as a few multi-tensor kernels per (device, step count)."""
        lr, wd = group["lr"], group["weight_decay"]
        b1, b2 = group["betas"]
        steps = [self.state[p]["step"] for p in params]
        torch._foreach_add_(steps, 1)
        by_t: dict[float, list[torch.Tensor]] = {}
        for p, s in zip(params, steps):
            by_t.setdefault(s.item(), []).append(p)  # all equal in practice: one group
        for t, ps in by_t.items():
            grads = [p.grad for p in ps]
            ms = [self.state[p]["exp_avg"] for p in ps]
            vs = [self.state[p]["exp_avg_sq"] for p in ps]
            torch._foreach_mul_(ps, 1 - lr * wd)
            torch._foreach_lerp_(ms, grads, 1 - b1)
            torch._foreach_lerp_(vs, torch._foreach_mul(grads, grads), 1 - b2)
            denom = torch._foreach_sqrt(vs)
            torch._foreach_div_(denom, math.sqrt(1 - b2**t))
            # There is no _foreach_atan2; one elementwise kernel per tensor (12 for the ARC trunk).
            updates = [torch.atan2(m, d) for m, d in zip(ms, denom)]
            torch._foreach_add_(ps, updates, alpha=-lr / (1 - b1**t))

    def _fused_step(self, params: list[torch.Tensor], group: dict) -> None:
        """The adam-atan2 CUDA kernel (upstream's optimizer); it reads the step count from device tensors."""
        b1, b2 = group["betas"]
        for p in params:
            state = self.state[p]
            if state["step"].device != p.device:
                state["step"] = state["step"].to(p.device)
        steps = [self.state[p]["step"] for p in params]
        torch._foreach_add_(steps, 1)
        _fused_backend().adam_atan2_cuda_impl_(
            params, [p.grad for p in params], [self.state[p]["exp_avg"] for p in params],
            [self.state[p]["exp_avg_sq"] for p in params], steps, group["lr"], b1, b2, group["weight_decay"])


class AdamATan2Pytorch(torch.optim.Optimizer):
    """The update of lucidrains' `adam-atan2-pytorch` (`adam_atan2_pytorch.AdamAtan2`, 0.4.1), which the Trelis
    fork's pretrain.py uses, per element (t = this parameter's step count, from 1):

        m = lerp(m, g, 1 - b1);  v = lerp(v, g^2, 1 - b2)
        u = atan2(m / (1 - b1^t), b * sqrt(v / (1 - b2^t)))
        p *= 1 - lr * wd;  p -= lr * a * u                        (a = 1.27, b = 1)

    Against upstream's `AdamATan2` the step is a = 1.27 times larger at the same lr once the bias corrections
    fade, and the early steps differ too (the corrections sit inside atan2). So the fork's learning rates mean
    this optimizer; running them with upstream's gives ~1/1.27 of the fork's steps. The package's other options
    (decoupled_wd, regen_reg_rate, cautious_wd/factor) keep the defaults the fork keeps and are not offered.
    Same op order as the package, so on the same device the results agree to the bit; pure torch, any device.
    `lr=0` is accepted (the trainer sets lr every step; the package asserts lr > 0 at construction).
    """

    def __init__(self, params: Iterable, lr: float = 0.0, betas: tuple[float, float] = (0.9, 0.95),
                 weight_decay: float = 0.1, a: float = 1.27, b: float = 1.0) -> None:
        if not (isinstance(lr, (int, float)) and lr >= 0.0):
            raise ValueError(f"AdamATan2Pytorch: lr must be a number >= 0, got {lr!r}")
        if len(betas) != 2 or not all(0.0 <= beta <= 1.0 for beta in betas):
            raise ValueError(f"AdamATan2Pytorch: betas must be two numbers in [0, 1], got {betas!r}")
        if not weight_decay >= 0.0:
            raise ValueError(f"AdamATan2Pytorch: weight_decay must be >= 0, got {weight_decay!r}")
        super().__init__(params, dict(lr=float(lr), betas=tuple(betas), weight_decay=float(weight_decay),
                                      a=float(a), b=float(b)))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, wd, a, b = group["lr"], group["weight_decay"], group["a"], group["b"]
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("AdamATan2Pytorch does not support sparse gradients")
                grad = p.grad.float()
                state = self.state[p]
                if not state:  # the package's state keys, so its state dicts load here and back
                    state["steps"] = 0
                    state["exp_avg"] = torch.zeros_like(grad)
                    state["exp_avg_sq"] = torch.zeros_like(grad)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                steps = state["steps"] + 1
                # bias corrections
                bias_correct1 = 1.0 - beta1**steps
                bias_correct2 = 1.0 - beta2**steps
                # decay running averages
                exp_avg.lerp_(grad, 1.0 - beta1)
                exp_avg_sq.lerp_(grad * grad, 1.0 - beta2)
                # a * atan2(m / bc1, b * sqrt(v / bc2)), in the package's order of operations
                den = exp_avg_sq.mul(b * b / bias_correct2).sqrt_()
                update = exp_avg.mul(1.0 / bias_correct1).atan2_(den)
                x = p if p.dtype == torch.float32 else p.float()
                if wd > 0.0:
                    x.mul_(1.0 - lr * wd)
                x.add_(update, alpha=-lr * a)
                if x is not p:
                    p.copy_(x)
                state["steps"] = steps
        return loss


OPTIMIZERS = {"adam_atan2": AdamATan2, "adam_atan2_pytorch": AdamATan2Pytorch}


# ----------------------------------------------------------------------------------------------------------
# Sign-SGD for the sparse puzzle embedding
# ----------------------------------------------------------------------------------------------------------


class SignSGDSparseEmbedding:
    """Sign-SGD with decoupled decay on the puzzle-embedding rows used since the last step, on every rank.

    At `step()`, the `(ids, leaf)` pairs that `SparseEmbedding` recorded in `module.pending` (several forward
    passes: ACT steps, gradient accumulation) are concatenated and all-gathered across ranks; gradients of
    duplicate ids are summed; then, for those rows only (upstream `_sparse_emb_signsgd_dist`):

        w[ids] = w[ids] * (1 - lr * wd) - lr * sign(sum of grads)

    Rows not in any batch are untouched (no decay either). `lr` lives in `param_groups[0]["lr"]` like a torch
    optimizer's, so the schedule sets both optimizers the same way.

    Args:
        module: the model's `SparseEmbedding` (`model.inner.puzzle_emb`).
        lr, weight_decay: upstream ARC: 1e-2 and 0.1 (so |w| stays <= 1/wd).
        dist: world size as an int, or a `trm_core.dist.DistInfo` (anything with `.world_size`); ranks must
            all call `step()` together when it is > 1.
    """

    def __init__(self, module: nn.Module, lr: float = 0.0, weight_decay: float = 0.1, dist: Any = 1) -> None:
        if not lr >= 0.0:
            raise ValueError(f"SignSGDSparseEmbedding: lr must be >= 0, got {lr!r}")
        if not weight_decay >= 0.0:
            raise ValueError(f"SignSGDSparseEmbedding: weight_decay must be >= 0, got {weight_decay!r}")
        if not hasattr(module, "pending") or not hasattr(module, "weights"):
            raise ValueError("SignSGDSparseEmbedding: module must be a SparseEmbedding (with .weights and .pending)")
        world_size = dist if isinstance(dist, int) else int(dist.world_size)
        if world_size < 1:
            raise ValueError(f"SignSGDSparseEmbedding: world size must be >= 1, got {world_size}")
        self.module = module
        self.dist_info = DistInfo(world_size=world_size)  # only .world_size is used (to gather)
        self.param_groups = [{"lr": float(lr), "weight_decay": float(weight_decay)}]

    @property
    def lr(self) -> float:
        return self.param_groups[0]["lr"]

    @torch.no_grad()
    def step(self) -> None:
        pending = [(ids, leaf) for ids, leaf in self.module.pending if leaf.grad is not None]
        self.module.pending.clear()
        weights = self.module.weights
        if pending:
            ids = torch.cat([i.reshape(-1).long() for i, _ in pending])  # (N,)
            grads = torch.cat([leaf.grad.reshape(-1, weights.shape[1]) for _, leaf in pending])  # (N, ndim)
        else:  # this rank saw no grad-carrying forward; it must still join the gather
            ids = torch.zeros(0, dtype=torch.long, device=weights.device)
            grads = torch.zeros(0, weights.shape[1], dtype=weights.dtype, device=weights.device)
        ids, grads = all_gather_cat(ids, self.dist_info), all_gather_cat(grads, self.dist_info)
        if ids.numel() == 0:
            return
        unique, inverse = ids.unique(return_inverse=True)
        summed = torch.zeros(unique.shape[0], weights.shape[1], dtype=torch.float32, device=weights.device)
        summed.index_add_(0, inverse, grads.float())
        lr, wd = self.param_groups[0]["lr"], self.param_groups[0]["weight_decay"]
        rows = weights[unique]
        weights[unique] = (rows * (1 - lr * wd) - lr * torch.sign(summed)).to(weights.dtype)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop recorded rows without updating (e.g. a skipped step)."""
        self.module.pending.clear()

    def state_dict(self) -> dict:
        return {"param_groups": [dict(g) for g in self.param_groups]}

    def load_state_dict(self, state: dict) -> None:
        self.param_groups = [dict(g) for g in state["param_groups"]]


# ----------------------------------------------------------------------------------------------------------
# Schedule
# ----------------------------------------------------------------------------------------------------------


def lr_at_step(step: int, base_lr: float, warmup_steps: int, total_steps: int, min_ratio: float = 1.0) -> float:
    """Upstream's `cosine_schedule_with_warmup_lr_lambda` (pretrain.py); steps count from 1.

    `base * step / warmup` during warmup, then a half cosine from `base` down to `base * min_ratio` at
    `total_steps`. With upstream's default `min_ratio = 1.0` the schedule is flat after warmup.
    """
    if step < warmup_steps:
        return base_lr * step / max(1, warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * (min_ratio + max(0.0, (1 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))))


# ----------------------------------------------------------------------------------------------------------
# EMA
# ----------------------------------------------------------------------------------------------------------


def _ema_name(name: str) -> str:
    """Parameter name without torch.compile's `_orig_mod.`, so compiled and plain models share one EMA."""
    return name.replace("_orig_mod.", "")


class EMA:
    """Shadow copy of the trainable parameters: `shadow = mu * shadow + (1 - mu) * param` (upstream EMAHelper).

    Only `requires_grad` parameters are tracked: the puzzle table is a buffer and is never copied (upstream's
    eval deep-copied the whole train state, 2.4 GB table included). `apply_to(model)` swaps the EMA weights in
    for evaluation or saving and puts the live ones back afterwards.
    """

    def __init__(self, model: nn.Module, mu: float = 0.999) -> None:
        if not 0.0 <= mu <= 1.0:
            raise ValueError(f"EMA: mu must be in [0, 1], got {mu!r}")
        self.mu = mu
        self.shadow: dict[str, torch.Tensor] = {_ema_name(n): p.detach().clone()
                                                 for n, p in model.named_parameters() if p.requires_grad}

    def _params(self, model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
        for n, p in model.named_parameters():
            key = _ema_name(n)
            if key in self.shadow:
                yield key, p

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for key, p in self._params(model):
            self.shadow[key].mul_(self.mu).add_(p.detach(), alpha=1 - self.mu)

    @contextlib.contextmanager
    def apply_to(self, model: nn.Module) -> Iterator[nn.Module]:
        """Within the block the model holds the EMA weights; the live weights are restored on exit."""
        live = []
        with torch.no_grad():
            for key, p in self._params(model):
                live.append((p, p.detach().clone()))
                p.copy_(self.shadow[key])
        try:
            yield model
        finally:
            with torch.no_grad():
                for p, saved in live:
                    p.copy_(saved)

    def state_dict(self) -> dict:
        return {"mu": self.mu, "shadow": dict(self.shadow)}

    def load_state_dict(self, state: dict) -> None:
        missing = set(self.shadow) - set(state["shadow"])
        unexpected = set(state["shadow"]) - set(self.shadow)
        if missing or unexpected:
            raise ValueError(f"EMA state does not match the model: missing {sorted(missing)[:5]}, "
                             f"unexpected {sorted(unexpected)[:5]}")
        self.mu = float(state["mu"])
        for k, v in state["shadow"].items():
            self.shadow[k].copy_(v)


__all__ = ["AdamATan2", "AdamATan2Pytorch", "EMA", "OPTIMIZERS", "SignSGDSparseEmbedding", "lr_at_step"]
