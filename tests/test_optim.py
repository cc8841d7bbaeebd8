"""AdamATan2, sign-SGD on the puzzle table, the warmup-cosine schedule and EMA, against hand-computed references."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import requires_cuda, tiny_arch
from torch import nn

from trm_core.model import build_model
from trm_core.optim import EMA, AdamATan2, SignSGDSparseEmbedding, lr_at_step


def adam_atan2_by_hand(p, grads, lr, betas, wd):
    """The upstream formula in float64, one step per gradient in `grads`."""
    p, m, v = p.double().clone(), torch.zeros_like(p, dtype=torch.float64), torch.zeros_like(p, dtype=torch.float64)
    b1, b2 = betas
    for t, g in enumerate(grads, start=1):
        g = g.double()
        p = p * (1 - lr * wd)
        m = m + (1 - b1) * (g - m)
        v = v + (1 - b2) * (g * g - v)
        p = p - lr / (1 - b1**t) * torch.atan2(m, v.sqrt() / math.sqrt(1 - b2**t))
    return p, m, v


def run_adam(p0, grads, **kw):
    p = nn.Parameter(p0.clone())
    opt = AdamATan2([p], **kw)
    for g in grads:
        p.grad = g.clone()
        opt.step()
    return p.detach(), opt


@pytest.mark.parametrize("n_steps", [1, 2])
def test_adam_atan2_matches_the_formula(n_steps):
    torch.manual_seed(0)
    p0 = torch.randn(5, 7)
    grads = [torch.randn(5, 7) * 1e-3 for _ in range(n_steps)]
    p, opt = run_adam(p0, grads, lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    ref_p, ref_m, ref_v = adam_atan2_by_hand(p0, grads, 1e-2, (0.9, 0.95), 0.1)
    state = opt.state[opt.param_groups[0]["params"][0]]
    torch.testing.assert_close(p.double(), ref_p, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(state["exp_avg"].double(), ref_m, rtol=1e-5, atol=1e-10)
    torch.testing.assert_close(state["exp_avg_sq"].double(), ref_v, rtol=1e-5, atol=1e-12)
    assert state["step"].item() == n_steps


def test_adam_atan2_with_lr_zero_leaves_params_but_advances_state():
    p0 = torch.randn(3, 4)
    g = torch.randn(3, 4)
    p, opt = run_adam(p0, [g, g], lr=0.0)
    assert torch.equal(p, p0)
    state = opt.state[opt.param_groups[0]["params"][0]]
    assert state["step"].item() == 2 and state["exp_avg"].abs().sum() > 0


def test_adam_atan2_rejects_bad_hyperparameters_naming_the_value():
    p = [nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match="lr.*-1"):
        AdamATan2(p, lr=-1)
    with pytest.raises(ValueError, match="betas"):
        AdamATan2(p, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="weight_decay.*-0.5"):
        AdamATan2(p, weight_decay=-0.5)


def test_adam_atan2_state_dict_round_trip_resumes_identically():
    torch.manual_seed(1)
    p0 = torch.randn(4, 4)
    grads = [torch.randn(4, 4) for _ in range(4)]
    straight, _ = run_adam(p0, grads, lr=1e-2)

    p = nn.Parameter(p0.clone())
    opt = AdamATan2([p], lr=1e-2)
    for g in grads[:2]:
        p.grad = g.clone()
        opt.step()
    saved = opt.state_dict()
    p2 = nn.Parameter(p.detach().clone())
    opt2 = AdamATan2([p2], lr=0.0)
    opt2.load_state_dict(saved)
    assert opt2.param_groups[0]["lr"] == 1e-2
    for g in grads[2:]:
        p2.grad = g.clone()
        opt2.step()
    assert torch.equal(p2.detach(), straight)


def test_adam_atan2_foreach_path_equals_reference_path():
    torch.manual_seed(2)
    shapes = [(8, 4), (3,), (2, 5, 3)]
    p0s = [torch.randn(s) for s in shapes]
    grads = [[torch.randn(s) for s in shapes] for _ in range(3)]
    results = []
    for foreach in (False, True):
        ps = [nn.Parameter(p.clone()) for p in p0s]
        opt = AdamATan2(ps, lr=1e-2, foreach=foreach)
        for gs in grads:
            for p, g in zip(ps, gs):
                p.grad = g.clone()
            opt.step()
        results.append([p.detach() for p in ps])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)


@requires_cuda
def test_adam_atan2_cuda_paths_match_cpu_reference():
    torch.manual_seed(3)
    p0 = torch.randn(64, 32)
    grads = [torch.randn(64, 32) for _ in range(3)]
    ref, _ = run_adam(p0, grads, lr=1e-2)
    p = nn.Parameter(p0.cuda())
    opt = AdamATan2([p], lr=1e-2)  # foreach (or the fused kernel when installed)
    for g in grads:
        p.grad = g.cuda()
        opt.step()
    torch.testing.assert_close(p.detach().cpu(), ref, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------
# Sign-SGD


def table_with_grads(ids_batches, grads_batches, rows=6, ndim=4):
    """A SparseEmbedding whose pending list holds the given ids and leaf grads (as after backward)."""
    from trm_core.model import SparseEmbedding

    emb = SparseEmbedding(rows, ndim)
    with torch.no_grad():
        emb.weights.copy_(torch.arange(rows * ndim, dtype=torch.float32).view(rows, ndim) / 10 + 1)
    emb.train()
    for ids, g in zip(ids_batches, grads_batches):
        out = emb(torch.tensor(ids))
        (out * g).sum().backward()
    return emb


def test_sign_sgd_changes_only_the_batch_rows_with_decay():
    g = torch.tensor([[1.0, -2.0, 0.0, 3.0], [-1.0, 1.0, 1.0, -1.0]])
    emb = table_with_grads([[1, 4]], [g])
    before = emb.weights.clone()
    SignSGDSparseEmbedding(emb, lr=0.5, weight_decay=0.1).step()
    untouched = [0, 2, 3, 5]
    assert torch.equal(emb.weights[untouched], before[untouched])
    expected = before[[1, 4]] * (1 - 0.5 * 0.1) - 0.5 * torch.sign(g)
    torch.testing.assert_close(emb.weights[[1, 4]], expected)


def test_sign_sgd_sums_duplicate_ids_before_the_sign():
    # Row 2 appears twice: +1 and -3 sum to -2 -> sign -1 (a per-occurrence update would cancel out).
    g = torch.tensor([[1.0, 1.0, 1.0, 1.0], [-3.0, -3.0, 0.5, -0.5]])
    emb = table_with_grads([[2, 2]], [g])
    before = emb.weights.clone()
    SignSGDSparseEmbedding(emb, lr=1.0, weight_decay=0.0).step()
    torch.testing.assert_close(emb.weights[2], before[2] - torch.tensor([-1.0, -1.0, 1.0, 1.0]))


def test_sign_sgd_clears_pending_and_skips_no_grad_entries():
    emb = table_with_grads([[0]], [torch.ones(1, 4)])
    emb(torch.tensor([3]))  # a forward whose output never reaches backward: its leaf has no grad
    before = emb.weights.clone()
    opt = SignSGDSparseEmbedding(emb, lr=1.0, weight_decay=0.0)
    opt.step()
    assert emb.pending == []
    assert torch.equal(emb.weights[3], before[3]) and not torch.equal(emb.weights[0], before[0])
    opt.step()  # nothing pending: no change
    assert torch.equal(emb.weights[0], before[0] - 1)


def test_sign_sgd_accumulates_two_backward_passes_into_one_step():
    emb = table_with_grads([[1], [1, 5]], [torch.full((1, 4), 2.0), torch.tensor([[-3.0] * 4, [1.0] * 4])])
    before = emb.weights.clone()
    SignSGDSparseEmbedding(emb, lr=1.0, weight_decay=0.0).step()
    torch.testing.assert_close(emb.weights[1], before[1] + 1)  # 2 - 3 = -1 -> +lr
    torch.testing.assert_close(emb.weights[5], before[5] - 1)


def test_sign_sgd_zero_grad_drops_pending_and_lr_is_schedulable():
    emb = table_with_grads([[1]], [torch.ones(1, 4)])
    opt = SignSGDSparseEmbedding(emb, lr=0.0)
    opt.param_groups[0]["lr"] = 0.25
    assert opt.lr == 0.25
    opt.zero_grad()
    assert emb.pending == []
    opt2 = SignSGDSparseEmbedding(emb)
    opt2.load_state_dict(opt.state_dict())
    assert opt2.lr == 0.25


def _sign_sgd_rank(rank, init_file, cases, out_file):
    """One rank: for each case, record this rank's ids/grads, step, and (rank 0) save the table."""
    import torch.distributed as dist

    from trm_core.dist import DistInfo

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    results = []
    for ids, grads in cases:
        emb = table_with_grads([ids[rank]], [grads[rank]])
        SignSGDSparseEmbedding(emb, lr=1.0, weight_decay=0.1, dist=DistInfo(rank=rank, world_size=2)).step()
        results.append(emb.weights)
    if rank == 0:
        torch.save(results, out_file)
    dist.destroy_process_group()


def test_sign_sgd_across_two_ranks_equals_one_rank_with_the_whole_batch(tmp_path):
    import torch.multiprocessing as mp

    g0 = torch.tensor([[1.0] * 4, [2.0] * 4, [-1.0] * 4])
    cases = [([[1, 2, 2], [4, 1]], [g0, -5 * torch.ones(2, 4)]),  # unequal sizes, id 1 on both ranks
             ([[1, 2, 2], []], [g0, torch.zeros(0, 4)])]  # one rank with an empty batch still joins the gather
    # fork: the children reuse this process's imports (spawn would re-import torch: ~20 s on 2 cores).
    mp.start_processes(_sign_sgd_rank, args=(str(tmp_path / "init"), cases, str(tmp_path / "w.pt")), nprocs=2,
                       start_method="fork")
    for (ids, grads), got in zip(cases, torch.load(tmp_path / "w.pt")):
        whole = table_with_grads([ids[0] + ids[1]], [torch.cat(grads)])
        SignSGDSparseEmbedding(whole, lr=1.0, weight_decay=0.1).step()
        assert torch.equal(got, whole.weights)


# ----------------------------------------------------------------------------------------------------------
# Schedule


@pytest.mark.parametrize("min_ratio, middle, end", [(1.0, 1.0, 1.0), (0.1, 0.55, 0.1)])
def test_lr_schedule_warmup_then_cosine(min_ratio, middle, end):
    base, warmup, total = 2.0, 10, 110
    assert lr_at_step(1, base, warmup, total, min_ratio) == pytest.approx(base * 1 / 10)
    assert lr_at_step(5, base, warmup, total, min_ratio) == pytest.approx(base * 0.5)
    assert lr_at_step(warmup, base, warmup, total, min_ratio) == pytest.approx(base)
    assert lr_at_step(60, base, warmup, total, min_ratio) == pytest.approx(base * middle)
    assert lr_at_step(total, base, warmup, total, min_ratio) == pytest.approx(base * end)


# ----------------------------------------------------------------------------------------------------------
# EMA


def test_ema_after_k_updates_equals_the_closed_form():
    lin = nn.Linear(3, 2)
    mu = 0.9
    start = lin.weight.detach().clone().double()
    ema = EMA(lin, mu=mu)
    values = [torch.full((2, 3), float(i)) for i in range(1, 5)]
    for v in values:
        with torch.no_grad():
            lin.weight.copy_(v)
        ema.update(lin)
    k = len(values)
    expected = mu**k * start + sum((1 - mu) * mu ** (k - i) * values[i - 1].double() for i in range(1, k + 1))
    torch.testing.assert_close(ema.shadow["weight"].double(), expected, rtol=1e-6, atol=1e-6)


def test_ema_apply_to_swaps_weights_in_and_restores_the_live_ones():
    lin = nn.Linear(3, 2)
    ema = EMA(lin, mu=0.5)
    with torch.no_grad():
        lin.weight.add_(1.0)
    ema.update(lin)
    live = lin.weight.detach().clone()
    with ema.apply_to(lin):
        assert torch.equal(lin.weight, ema.shadow["weight"])
        assert not torch.equal(lin.weight, live)
    assert torch.equal(lin.weight, live)


def test_ema_does_not_copy_the_puzzle_table_and_round_trips():
    model = build_model(tiny_arch(num_puzzle_identifiers=1000))
    ema = EMA(model)
    assert not any("puzzle_emb" in k for k in ema.shadow)
    assert set(ema.shadow) == {n for n, p in model.named_parameters() if p.requires_grad}
    other = EMA(model, mu=0.5)
    other.load_state_dict(ema.state_dict())
    assert other.mu == ema.mu


# ----------------------------------------------------------------------------------------------------------
# The fork's optimizer: adam-atan2-pytorch's algorithm
# ----------------------------------------------------------------------------------------------------------

def _run(opt_factory, steps=12, seed=0):
    """Parameters after `steps` updates with fixed random gradients and a rising lr (as a warmup sets it)."""
    g = torch.Generator().manual_seed(seed)
    params = [nn.Parameter(torch.randn(7, 5, generator=g)), nn.Parameter(torch.randn(3, generator=g))]
    opt = opt_factory(params)
    for t in range(steps):
        for group in opt.param_groups:
            group["lr"] = 1e-2 * (t + 1) / steps
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()
    return [p.detach().clone() for p in params]


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adam_atan2_pytorch_matches_the_package_the_fork_trains_with(weight_decay):
    package = pytest.importorskip("adam_atan2_pytorch", reason="test-only dependency (pip install .[dev])")
    from trm_core.optim import AdamATan2Pytorch

    betas = (0.9, 0.95)
    theirs = _run(lambda ps: package.AdamAtan2(ps, lr=1e-4, betas=betas, weight_decay=weight_decay))
    ours = _run(lambda ps: AdamATan2Pytorch(ps, lr=0.0, betas=betas, weight_decay=weight_decay))
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # same ops in the same order: bit for bit


def test_adam_atan2_pytorch_steps_are_1_27x_upstreams_at_the_same_lr():
    from trm_core.optim import AdamATan2Pytorch

    def last_step(opt_cls):
        p = nn.Parameter(torch.zeros(4))
        opt = opt_cls([p], lr=1e-3, betas=(0.9, 0.95), weight_decay=0.0)
        for _ in range(300):  # bias corrections fade; a constant gradient gives a constant step
            before = p.detach().clone()
            p.grad = torch.full((4,), 0.5)
            opt.step()
        return (before - p.detach()).abs().mean().item()

    assert last_step(AdamATan2Pytorch) / last_step(AdamATan2) == pytest.approx(1.27, rel=1e-4)


def test_trainer_builds_the_optimizer_the_config_names():
    from trm_core.config import ConfigError
    from trm_core.optim import AdamATan2Pytorch
    from trm_core.train import TrainConfig, Trainer, validate_config

    class Meta:
        seq_len, vocab_size, num_puzzle_identifiers = 16, 12, 8

    arch = dict(hidden_size=32, num_heads=2, L_layers=1, H_cycles=1, L_cycles=1, puzzle_emb_ndim=32,
                puzzle_emb_len=1, halt_max_steps=2, forward_dtype="float32")
    for name, cls in (("adam_atan2", AdamATan2), ("adam_atan2_pytorch", AdamATan2Pytorch)):
        trainer = Trainer(TrainConfig(arch=arch, global_batch_size=4, optimizer=name, device="cpu"))
        trainer.setup_without_data(Meta())
        assert type(trainer.optimizers["trunk"]) is cls
    with pytest.raises(ConfigError, match="optimizer must be adam_atan2"):
        validate_config(TrainConfig(optimizer="adamw"))
