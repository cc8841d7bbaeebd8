"""Choosing the attempts (trm_core.rescore): views, likelihoods, rules, latent noise, pooling, the planner's share,
and the files that explain the choice (predictions.json through trm pool and trm report)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_arch
from trm_core.data.augment import IDENTITY_PERM, PAD, apply_aug, grid_to_tokens
from trm_core.rescore import (SELECT_RULES, Selection, Views, apply_rule, candidates_json, pick_views,
                              score_candidates)
from trm_core.voting import Candidate, VoteAccumulator

CANVAS = 6
# Task "two" has two test inputs of the same shape (rows are told apart by content); "one" has one.
CHALLENGES = {
    "two": {"train": [{"input": [[1, 2, 0], [0, 3, 0]], "output": [[2, 1, 0], [0, 3, 0]]}],
            "test": [{"input": [[1, 0, 0, 2], [0, 4, 0, 0], [5, 0, 0, 0]]},
                     {"input": [[0, 0, 7, 0], [0, 6, 0, 0], [0, 0, 0, 8]]}]},
    "one": {"train": [{"input": [[3, 0], [0, 0]], "output": [[0, 3], [0, 0]]}],
            "test": [{"input": [[1, 2, 3], [0, 0, 4]]}]},
}
SOLUTIONS = {"two": [[[2, 0, 0, 1], [0, 0, 4, 0], [0, 0, 0, 5]], [[0, 7, 0, 0], [0, 0, 6, 0], [8, 0, 0, 0]]],
             "one": [[[3, 2, 1], [4, 0, 0]]]}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from trm_core.data.build import build_dataset

    tmp = tmp_path_factory.mktemp("rescore")
    (tmp / "c.json").write_text(json.dumps(CHALLENGES))
    (tmp / "s.json").write_text(json.dumps(SOLUTIONS))
    build_dataset(None, tmp / "data", ["t"], test_set_names=["t"], num_aug=5, seed=0, canvas_size=CANVAS,
                  progress=False, sources=[("t", tmp / "c.json", tmp / "s.json")])
    return tmp / "data"


def task_inputs() -> dict:
    return {t: [p["input"] for p in task["test"]] for t, task in CHALLENGES.items()}


def split(data: Path) -> dict[str, np.ndarray]:
    return {k: np.load(data / "test" / f"all__{k}.npy") for k in ("inputs", "labels", "puzzle_identifiers",
                                                                   "puzzle_indices")}


def split_rows(data: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inputs, labels, puzzle id) of every row of the test split."""
    s = split(data)
    pids = np.repeat(s["puzzle_identifiers"], np.diff(s["puzzle_indices"]))
    return s["inputs"].astype(np.uint8), s["labels"], pids.astype(np.int64)


def identifiers(data: Path) -> list[str]:
    return json.loads((data / "identifiers.json").read_text())


def tiny_model(data: Path, **arch):
    from trm_core.model import build_model

    torch.manual_seed(0)
    return build_model(tiny_arch(seq_len=CANVAS * CANVAS, num_puzzle_identifiers=len(identifiers(data)),
                                 halt_max_steps=1, **arch)).eval()


def one_view(views: Views, r: int) -> Views:
    return Views(views.groups, views.inputs[r:r + 1], views.puzzle_identifiers[r:r + 1], views.group[r:r + 1],
                 views.tid[r:r + 1], views.perm[r:r + 1])


def ranked_of(groups: dict) -> dict:
    return {g: [Candidate(np.asarray(grid, np.uint8), votes, 0.5) for grid, votes in cands]
            for g, cands in groups.items()}


# --- views --------------------------------------------------------------------------------------------------

def test_each_test_input_gets_its_first_m_views_and_each_view_row_is_that_input_under_the_view(data):
    inputs, _, pids = split_rows(data)
    views = pick_views(inputs, pids, identifiers(data), task_inputs(), canvas=CANVAS, views=3)
    assert views.groups == [("two", 0), ("two", 1), ("one", 0)]
    assert np.bincount(views.group).tolist() == [3, 3, 3]
    for r in range(len(views)):
        task, i = views.groups[views.group[r]]
        grid = np.asarray(task_inputs()[task][i], np.uint8)
        assert (views.inputs[r] == grid_to_tokens(apply_aug(grid, int(views.tid[r]), views.perm[r]), CANVAS)).all()
    first = [np.flatnonzero(views.group == g)[0] for g in range(3)]
    assert all(views.tid[r] == 0 and (views.perm[r] == IDENTITY_PERM).all() for r in first)  # the original first
    # Repeated rows (noisy passes, pooled checkpoints) and padding rows change nothing.
    twice = pick_views(np.concatenate([inputs, inputs, inputs[:2]]), np.concatenate([pids, pids, [0, 0]]),
                       identifiers(data), task_inputs(), canvas=CANVAS, views=3)
    assert (twice.inputs == views.inputs).all() and (twice.group == views.group).all()


# --- likelihoods --------------------------------------------------------------------------------------------

def test_a_candidate_is_encoded_in_a_view_exactly_as_the_builder_encodes_a_test_output():
    from trm_core.data.augment import random_colour_perm
    from trm_core.rescore import candidate_tokens

    rng = np.random.default_rng(0)
    for h, w in [(1, 1), (2, 5), (5, 2), (6, 6), (3, 4)]:
        grid = rng.integers(0, 10, size=(h, w)).astype(np.uint8)
        for tid in range(8):
            perm = random_colour_perm(rng)
            assert (candidate_tokens(grid, tid, perm, CANVAS) == grid_to_tokens(apply_aug(grid, tid, perm),
                                                                                CANVAS)).all()
    assert candidate_tokens(np.zeros((2, 7), np.uint8), 0, IDENTITY_PERM, CANVAS) is None  # wider than the canvas
    assert candidate_tokens(np.zeros((0, 0), np.uint8), 0, IDENTITY_PERM, CANVAS) is None


@pytest.mark.parametrize("loss_type", ["stablemax_cross_entropy", "softmax_cross_entropy"])
def test_poe_is_the_sum_over_views_of_the_loss_heads_log_probability_of_the_transformed_candidate(data, loss_type):
    from trm_core.model import log_stablemax, predict

    model = tiny_model(data, loss_type=loss_type)
    inputs, _, pids = split_rows(data)
    views = pick_views(inputs, pids, identifiers(data), task_inputs(), canvas=CANVAS, views=4)
    cands = {("one", 0): [(SOLUTIONS["one"][0], 3), ([[1, 2], [3, 4]], 2)]}
    scored = score_candidates(model, views, ranked_of(cands), candidates=8, batch_size=5)
    g = views.groups.index(("one", 0))
    rows = np.flatnonzero(views.group == g)
    for c in scored[("one", 0)]:
        expected = 0.0
        for r in rows:
            logits = predict(model, torch.as_tensor(views.inputs[r:r + 1].astype(np.int32)),
                             torch.as_tensor(views.puzzle_identifiers[r:r + 1]))["logits"][0]
            logp = log_stablemax(logits, -1) if loss_type.startswith("stablemax") else torch.log_softmax(logits, -1)
            label = grid_to_tokens(apply_aug(c.grid, int(views.tid[r]), views.perm[r]), CANVAS)
            keep = label != PAD
            expected += float(logp[np.flatnonzero(keep), label[keep].astype(np.int64)].sum())
        assert c.views == 4 and c.tokens == int((grid_to_tokens(c.grid, CANVAS) != PAD).sum())
        assert c.logprob == pytest.approx(expected, rel=1e-5, abs=1e-4)
    assert set(scored) == {("one", 0)}  # test inputs without candidates stay absent
    import trm_core.rescore

    trm_core.rescore.GATHER_ELEMENTS, kept = 1, trm_core.rescore.GATHER_ELEMENTS  # one row at a time
    try:
        again = score_candidates(model, views, ranked_of(cands), candidates=8, batch_size=5)
    finally:
        trm_core.rescore.GATHER_ELEMENTS = kept
    assert [c.logprob for c in again[("one", 0)]] == pytest.approx([c.logprob for c in scored[("one", 0)]])


def test_a_model_invariant_to_the_views_gives_a_candidate_the_same_score_under_every_view(data, monkeypatch):
    """A copy model (puts its mass on the input token of each cell) sees the same thing in every view, so a
    candidate's per-view log-probabilities agree only if the view's transform reached the candidate exactly as
    it reached the input (a wrong or inverted transform moves the changed cell onto other tokens)."""
    import trm_core.model

    def copy_model(model, x, puzzle_identifiers, steps=None):
        return {"logits": 4.0 * torch.nn.functional.one_hot(x.long(), 12).float()}

    monkeypatch.setattr(trm_core.model, "predict", copy_model)
    model = tiny_model(data, loss_type="softmax_cross_entropy")
    inputs, _, pids = split_rows(data)
    views = pick_views(inputs, pids, identifiers(data), task_inputs(), canvas=CANVAS, views=6)
    x = np.asarray(CHALLENGES["two"]["test"][0]["input"], np.uint8)
    near = x.copy()
    near[0, 1] = 9  # one cell off, in a spot no symmetry of the grid maps onto itself
    cands = ranked_of({("two", 0): [(x, 1), (near, 1), (near.T, 1)]})
    g = views.groups.index(("two", 0))
    per_view = [[c.logprob for c in score_candidates(model, one_view(views, r), cands, candidates=3)[("two", 0)]]
                for r in np.flatnonzero(views.group == g)]
    per_view = np.array(per_view)  # (views, candidates)
    # Same-shaped candidates: the same score in all 6 views (a grid of another shape meets the input's EOS
    # border and padding differently from view to view, so only its ranking is checked).
    assert len({tuple(view) for view in per_view[:, :2].round(5)}) == 1 and len(per_view) == 6
    assert (per_view[:, 0] > per_view[:, 1]).all()  # the input itself is what a copy model predicts
    assert (per_view[:, 2] < per_view[:, 1]).all()  # a transposed grid is further off


def test_a_model_trained_to_output_an_answer_scores_it_above_a_near_miss(data):
    inputs, labels, pids = split_rows(data)
    model = tiny_model(data, loss_type="softmax_cross_entropy", hidden_size=64, puzzle_emb_ndim=64)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    batch = {"inputs": torch.as_tensor(inputs.astype(np.int32)), "puzzle_identifiers": torch.as_tensor(pids)}
    target = torch.as_tensor(labels.astype(np.int64)).masked_fill(torch.as_tensor(labels == PAD), -100)
    for _ in range(150):
        carry = model.inner.reset_carry(torch.ones(len(inputs), dtype=torch.bool),
                                        model.inner.empty_carry(len(inputs), torch.device("cpu"), torch.float32))
        _, logits, _ = model.inner(carry, batch)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    views = pick_views(inputs, pids, identifiers(data), task_inputs(), canvas=CANVAS, views=4)
    truth = np.asarray(SOLUTIONS["one"][0], np.uint8)
    miss = truth.copy()
    miss[1, 2] = 7
    scored = score_candidates(model, views, ranked_of({("one", 0): [(miss, 5), (truth, 1)]}), candidates=2)
    by_grid = {c.grid.tobytes(): c.logprob for c in scored[("one", 0)]}
    assert by_grid[truth.tobytes()] > by_grid[miss.tobytes()] + 1.0
    assert [c.votes for c in apply_rule(scored, "poe", 2)[("one", 0)]] == [1, 5]  # poe overturns the vote


# --- rules --------------------------------------------------------------------------------------------------

def cand(name: int, votes: int, q: float, logprob: float | None, tokens: int, views: int = 2) -> Candidate:
    return Candidate(np.full((1, 1), name, np.uint8), votes, q, logprob, views if logprob is not None else 0, tokens)


RULE_CANDS = [cand(0, 5, .5, -20.0, 10), cand(1, 3, .9, -5.0, 10), cand(2, 3, .1, -3.0, 30), cand(3, 1, .5, -1.0, 1),
              cand(4, 1, .2, None, 0)]


@pytest.mark.parametrize("rule,order", [
    ("votes", [0, 1, 2, 3]),                # count, then mean q (B over C)
    ("poe", [3, 2, 1, 0]),                  # summed log-probability over views
    ("mean_logprob", [2, 1, 3, 0]),         # per view and token: -1, -.25, -.05, -.5
    ("votes_then_logprob", [0, 2, 1, 3]),   # count; C beats B on log-probability
    ("hybrid", [2, 3, 1, 0]),               # log votes + logprob / views: -8.39, -1.40, -0.40, -0.5
])
def test_each_rule_orders_the_top_k_as_documented_and_leaves_the_rest(rule, order):
    ranked = apply_rule({("t", 0): RULE_CANDS}, rule, 4)[("t", 0)]
    assert [int(c.grid[0, 0]) for c in ranked] == order + [4]


def test_a_candidate_that_cannot_be_encoded_ranks_last_under_likelihood_rules_and_json_stays_valid():
    cands = [cand(0, 9, .5, -math.inf, 3), cand(1, 1, .5, -50.0, 3)]
    assert [int(c.grid[0, 0]) for c in apply_rule({("t", 0): cands}, "poe", 2)[("t", 0)]] == [1, 0]
    records = candidates_json(cands, 10, 2)
    json.dumps(records, allow_nan=False)
    assert records[0]["logprob"] is None and records[0]["ranks"] == {
        "votes": 1, "poe": 2, "mean_logprob": 2, "votes_then_logprob": 1, "hybrid": 2}


def test_selection_checks_its_fields():
    assert Selection().rescores and Selection().rule == "mean_logprob" and Selection().views is None
    assert not Selection(rule="votes").rescores and not Selection(rule="poe", views=0).rescores
    assert Selection().views_per_input(101) == 101 and Selection(views=8).views_per_input(5) == 5
    with pytest.raises(ValueError, match="select rule"):
        Selection(rule="best")
    with pytest.raises(ValueError, match="noise_scale"):
        Selection(noise_scale=-1)
    assert set(SELECT_RULES) == {"votes", "poe", "mean_logprob", "votes_then_logprob", "hybrid"}


# --- latent noise -------------------------------------------------------------------------------------------

def test_predict_with_zero_noise_is_the_deterministic_forward_and_noise_is_repeatable(data):
    from trm_core.model import predict

    model = tiny_model(data)
    inputs, _, pids = split_rows(data)
    x, p = torch.as_tensor(inputs[:6].astype(np.int32)), torch.as_tensor(pids[:6])
    plain = predict(model, x, p)["logits"]
    assert torch.equal(predict(model, x, p, noise=0.0)["logits"], plain)
    a = predict(model, x, p, noise=0.5, generator=torch.Generator().manual_seed(1))["logits"]
    b = predict(model, x, p, noise=0.5, generator=torch.Generator().manual_seed(1))["logits"]
    assert torch.equal(a, b) and not torch.allclose(a, plain)


def test_noise_zero_reproduces_the_noiseless_votes_exactly(data):
    from trm_core.data.dataset import PuzzleDataset
    from trm_core.evaluate import run_inference

    model = tiny_model(data)
    ds = PuzzleDataset([str(data)], "test", global_batch_size=8)

    def ranked(**noise):
        arrays = run_inference(model, ds, progress=False, **noise)
        acc = VoteAccumulator(identifiers(data), task_inputs(), canvas=CANVAS)
        acc.add(arrays["inputs"], arrays["preds"], arrays["puzzle_identifiers"], arrays["q_halt_logits"])
        return arrays, acc.ranked()

    base_arrays, base = ranked()
    arrays, silent = ranked(noise_scale=0.0, noise_samples=2)
    assert len(arrays["preds"]) == 3 * len(base_arrays["preds"])
    for g in base:
        assert [c.grid.tobytes() for c in silent[g]] == [c.grid.tobytes() for c in base[g]]
        assert [c.votes for c in silent[g]] == [3 * c.votes for c in base[g]]
        assert [c.mean_q for c in silent[g]] == pytest.approx([c.mean_q for c in base[g]])
    noisy_a, _ = ranked(noise_scale=1.0, noise_samples=2, noise_seed=3)
    noisy_b, _ = ranked(noise_scale=1.0, noise_samples=2, noise_seed=3)
    assert np.array_equal(noisy_a["preds"], noisy_b["preds"])  # seeded: repeatable
    assert not np.array_equal(noisy_a["preds"], arrays["preds"])  # and different from the silent passes


# --- evaluation files ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(data, tmp_path_factory) -> Path:
    from trm_core.checkpoint import save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(path, tiny_model(data), identifiers_path=data / "identifiers.json")
    return path


def test_predictions_json_explains_the_choice_and_round_trips_through_trm_pool_and_trm_report(data, checkpoint,
                                                                                              tmp_path):
    from trm_core.evaluate import main_eval
    from trm_core.report import main as report_main
    from trm_core.submission import main_pool, validate_submission

    new, old = tmp_path / "new", tmp_path / "old"
    common = ["--checkpoint", str(checkpoint), "--data", str(data), "--device", "cpu", "--no-progress"]
    assert main_eval(common + ["--output-dir", str(new), "--select", "poe", "--select-views", "3",
                               "--select-candidates", "4"]) == 0
    assert main_eval(common + ["--output-dir", str(old), "--select", "votes"]) == 0  # as files were before
    pred = json.loads((new / "predictions.json").read_text())
    assert pred["select"] == "poe" and pred["selection"]["views"] == 3
    first = pred["tasks"]["one"][0]["candidates"][0]
    assert {"grid", "votes", "mean_q", "logprob", "views", "tokens", "scores", "ranks"} <= set(first)
    assert first["views"] == 3 and first["ranks"]["poe"] == 1 and set(first["scores"]) >= {"poe", "mean_logprob"}
    metrics = json.loads((new / "metrics.json").read_text())
    assert metrics["rescore_rows"] == 3 * 3 and metrics["select"] == "poe"
    assert {f"ARC/{r}/pass@2" for r in SELECT_RULES} <= set(metrics)
    # The old format (no likelihoods) still reads as before.
    old_pred = json.loads((old / "predictions.json").read_text())
    assert set(old_pred["tasks"]["one"][0]["candidates"][0]) == {"grid", "votes", "mean_q"}
    assert report_main([str(new)]) == 0 and "log p" in (new / "report.html").read_text()
    assert report_main([str(old)]) == 0
    pooled = tmp_path / "pooled"
    assert main_pool([str(new / "predictions.json"), str(old / "predictions.json"), "--challenges",
                      str(data / "test_puzzles.json"), "--output", str(tmp_path / "sub.json"),
                      "--report-dir", str(pooled)]) == 0
    assert validate_submission(tmp_path / "sub.json", data / "test_puzzles.json") == []
    both = json.loads((pooled / "predictions.json").read_text())["tasks"]["one"][0]["candidates"]
    mine = {json.dumps(c["grid"]): c["votes"] for c in pred["tasks"]["one"][0]["candidates"]}
    assert all(c["votes"] == 2 * mine[json.dumps(c["grid"])] for c in both)  # the same model twice
    assert json.loads((pooled / "metrics.json").read_text())["evaluations"] == 2
    assert report_main([str(pooled)]) == 0


def test_several_checkpoints_pool_their_votes_in_one_evaluation(data, checkpoint, tmp_path):
    from trm_core.evaluate import run_eval

    one = run_eval(checkpoint, data, tmp_path / "one", device="cpu", progress=False)
    two = run_eval([checkpoint, checkpoint], data, tmp_path / "two", device="cpu", progress=False)
    assert two["models_pooled"] == 2 and two["rows"] == 2 * one["rows"]
    votes = [json.loads((tmp_path / d / "predictions.json").read_text())["tasks"]["one"][0]["candidates"][0]["votes"]
             for d in ("one", "two")]
    assert votes[1] == 2 * votes[0]


def test_past_a_deadline_older_checkpoints_and_rescoring_are_dropped_but_the_newest_model_votes(data, checkpoint,
                                                                                                  tmp_path):
    import time

    from trm_core.evaluate import run_eval

    late = run_eval([checkpoint, checkpoint, checkpoint], data, tmp_path / "late", device="cpu", progress=False,
                    selection=Selection(rule="poe", views=3), deadline=time.time() - 1)
    assert late["models_pooled"] == 1 and late["rescore_skipped"] == "deadline" and late["select"] == "votes"
    assert late["rescore_rows"] == 0
    on_time = run_eval([checkpoint, checkpoint], data, tmp_path / "on_time", device="cpu", progress=False,
                       selection=Selection(rule="poe", views=3), deadline=time.time() + 600)
    assert on_time["models_pooled"] == 2 and on_time["select"] == "poe" and "rescore_skipped" not in on_time


def test_the_trainer_writes_a_pooled_evaluation_of_its_last_n(small_dataset, tmp_path):
    from test_train import tiny_cfg
    from trm_core.train import run

    trainer = run(tiny_cfg(small_dataset, tmp_path, epochs=2, eval_interval=1, pool_last_n=2,
                           eval_selection={"rule": "poe", "views": 2, "candidates": 3}))
    evals = sorted(int(p.name[5:]) for p in (trainer.run_dir / "eval").glob("step_*"))
    assert len(evals) == 2
    pooled = trainer.run_dir / "eval" / f"step_{evals[-1]}" / "pooled_last_2"
    assert json.loads((pooled / "metrics.json").read_text())["evaluations"] == 2
    rows = [json.loads(line) for line in (trainer.run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = {k for r in rows for k in r}
    assert {"eval/pooled/ARC/pass@2", "ARC/poe/pass@2", "ARC/votes/pass@2"} <= logged


# --- the Kaggle planner -------------------------------------------------------------------------------------

def test_the_plan_counts_rescoring_rows_like_inference_rows():
    from trm_core.budget import plan_budget

    base = plan_budget(1000, 0, 1.0, 0.01, 10_000, hidden_rerun_factor=1.5, safety_margin=0.0)
    with_rescore = plan_budget(1000, 0, 1.0, 0.01, 10_000, hidden_rerun_factor=1.5, safety_margin=0.0,
                               rescore_rows=2_000)
    assert with_rescore.rescore_s == pytest.approx(30) and base.rescore_s == 0
    assert with_rescore.train_s == pytest.approx(base.train_s - 30)


def test_when_time_is_short_rescoring_goes_first_then_noise_then_pooling_then_augmentations():
    from trm_core.budget import inference_that_fits

    def fit(seconds):  # 10 test inputs, 0.1 s a row: `seconds` buys seconds rows per input
        return inference_that_fits(seconds, 0.1, 10, 7, views=8, noise_samples=1, pool=2, hidden_rerun_factor=1.0)

    # Everything: (1 + 7) x 2 pooled x 2 passes = 32 voting rows + 8 rescoring rows per input.
    assert fit(40) == {"vote_aug": 7, "views": 8, "noise_samples": 1, "pool": 2, "cut": []}
    assert fit(37) == {"vote_aug": 7, "views": 5, "noise_samples": 1, "pool": 2, "cut": ["views"]}
    assert fit(31)["views"] == 0 and fit(31)["noise_samples"] == 0 and fit(31)["pool"] == 2
    assert fit(15) == {"vote_aug": 7, "views": 0, "noise_samples": 0, "pool": 1, "cut": ["views", "noise_samples",
                                                                                        "pool"]}
    assert fit(5)["vote_aug"] == 4 and fit(5)["cut"][-1] == "vote_aug"


def test_views_on_the_command_line_are_a_count_or_all():
    from trm_core.config import KaggleRunConfig, field_value
    from trm_core.rescore import views_arg

    assert views_arg("all") is None and views_arg("8") == 8
    assert field_value(KaggleRunConfig, "select_views", "all") is None  # trm kaggle --select-views all, --set


def test_the_kaggle_runner_pools_checkpoints_adds_noisy_votes_and_rescores(tmp_path):
    from test_kaggle import tiny_run
    from trm_core.config import KaggleRunConfig
    from trm_core.kaggle import run_kaggle
    from trm_core.submission import check_submission

    cfg = tiny_run(tmp_path, steps=8, select="poe", select_views=2, noise_samples=1, noise_scale=0.3,
                   pool_checkpoints=2)
    result = run_kaggle(cfg)
    assert result.status == "ok", result.errors
    assert check_submission(result.submission, Path(cfg.data_dir) / "arc-agi_test_challenges.json") == []
    assert result.plan["rescore_s"] > 0
    metrics = json.loads((result.eval_dir / "metrics.json").read_text())
    assert metrics["select"] == "poe" and metrics["rescore_rows"] > 0 and "ARC/votes/pass@2" in metrics
    assert metrics["selection"]["candidates"] == 64
    pooled = list((result.run_dir / "runs" / "adapt" / "checkpoints").glob("step_*"))
    assert len(pooled) == 2 and metrics["pooled"] == 2 and metrics["noise_samples"] == 1  # both voted, twice
    with pytest.raises(ValueError, match="select rule"):
        run_kaggle(KaggleRunConfig(output_dir=str(tmp_path / "bad"), select="best"))


def test_the_default_attempt_selection_is_rescores_and_its_config_default():
    from trm_core.config import KaggleRunConfig
    from trm_core.rescore import DEFAULT_RULE

    assert KaggleRunConfig().select == DEFAULT_RULE
