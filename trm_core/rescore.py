"""Choosing the two attempts: each candidate's likelihood across augmented views, and the selection rules.

Voting (`trm_core.voting`) gives every test input its candidates (distinct predicted grids) with their vote
counts and mean sigmoid(q_halt). Upstream submits the two with the most votes. The best ARC systems of 2025 also
ask the model how likely each candidate is: the ARChitects multiply a candidate's probabilities under many
augmented views (a product of experts), NVARC ranks by count and mean log-probability. This module does that
for TRM:

1. `pick_views`: up to M augmented views per test input, taken from the rows the voting inference already ran
   (a view = one augmented puzzle of the task: dihedral transform t, colour map p, its puzzle id).
2. `score_candidates`: log p(candidate | view) for the top-K candidates by votes under each view: the view's
   (t, p) is applied to the candidate, encoded like the builder's labels (`grid_to_tokens`: cells and the EOS
   border; PAD cells are not scored, as in training), and the model's per-cell log-probabilities of those
   tokens are summed. The probabilities are the loss head's: log stablemax for stablemax models, log softmax
   for softmax ones (`ArchConfig.loss_type`), i.e. what the model was trained to put on labels.
   TRM predicts every cell at once from the input (nothing is autoregressive), so the label never enters the
   forward pass: ONE forward per view scores all K candidates. Rescoring costs M rows per test input (not
   K x M), each a normal inference row (`eval_steps` ACT steps) -- what the Kaggle planner counts.
3. `apply_rule`: re-rank the top K by a rule (SELECT_RULES); candidates below K follow in vote order.

Rules (the same K candidates; only their order differs, so pass@K is the same for every rule):
  votes               vote count, then mean sigmoid(q_halt) (upstream TRM; nothing to compute)
  poe                 product of experts (ARChitects): the sum over the M views of log p(candidate | view)
  mean_logprob        poe / (M x scored tokens): the mean per-view, per-token log-probability (the log of the
                      geometric-mean token probability); unlike poe it does not favour small grids
  votes_then_logprob  vote count first, poe breaks ties (NVARC-like: count, then likelihood), then mean q
  hybrid              log(votes) + poe / M: vote frequency times the geometric mean of the view likelihoods
Remaining ties: votes, then mean q, then vote order.

Diverse candidates (`Selection.noise_scale`, `noise_samples`): `trm_core.evaluate.run_inference` adds passes
with Gaussian noise on the latents at every recursion update (PTRM); their predictions vote in the same
accumulator as the deterministic pass.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from typing import Any

import numpy as np

from trm_core.data.augment import (COLOR_OFFSET, IDENTITY_PERM, PAD, VOCAB_SIZE, dihedral_transform,
                                   grid_to_tokens, parse_aug_names)
from trm_core.voting import Candidate, Ranked, TestInputs, pass_at_k

SELECT_RULES = ("votes", "poe", "mean_logprob", "votes_then_logprob", "hybrid")
LIKELIHOOD_RULES = SELECT_RULES[1:]
# The default: the measured winner, >= votes in pass@2 on every measured set and above it where the candidates
# allowed (README, "Choosing the two attempts"; bench/bench_selection.py). Votes stay one flag away.
DEFAULT_RULE = "mean_logprob"
GATHER_ELEMENTS = 2 ** 23  # label tokens gathered at once when scoring (bounds memory for large K on canvas 30)


@dataclass
class Selection:
    """How the attempts are chosen: the rule, what it rescores, and the optional noisy passes that add candidates.

    candidates (K): candidates per test input rescored (the top K by votes); views (M): augmented views each
    one is scored under, at most the views the voting ran (None = all of them: one more row per voting row).
    noise_scale / noise_samples: extra inference passes per row with latent noise (0 samples = off); noise_seed
    makes them repeatable. The defaults (mean_logprob, K 64, every view, no noise) are the measured best.
    """

    rule: str = DEFAULT_RULE
    candidates: int = 64
    views: int | None = None
    noise_scale: float = 0.0
    noise_samples: int = 0
    noise_seed: int = 0

    def __post_init__(self) -> None:
        if self.rule not in SELECT_RULES:
            raise ValueError(f"select rule must be one of {', '.join(SELECT_RULES)}, got {self.rule!r}")
        for name in ("candidates", "views", "noise_samples", "noise_seed"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.noise_scale < 0:
            raise ValueError(f"noise_scale must be >= 0, got {self.noise_scale}")

    @property
    def rescores(self) -> bool:
        """True when the rule needs likelihoods (extra forward passes: `views` rows per test input)."""
        return self.rule in LIKELIHOOD_RULES and self.candidates > 0 and (self.views is None or self.views > 0)

    def views_per_input(self, voting_rows: int) -> int:
        """Rescoring rows per test input when `voting_rows` views of it voted (0 when nothing is rescored)."""
        if not self.rescores:
            return 0
        return voting_rows if self.views is None else min(self.views, voting_rows)

    def as_dict(self) -> dict:
        return asdict(self)


def views_arg(text: str) -> int | None:
    """A command-line M: a count >= 0, or 'all' (None) for every view that voted."""
    if str(text).strip().lower() == "all":
        return None
    value = int(text)
    if value < 0:
        raise ValueError(f"views must be >= 0 or 'all', got {text!r}")
    return value


# ----------------------------------------------------------------------------------------------------------
# Views
# ----------------------------------------------------------------------------------------------------------

@dataclass
class Views:
    """Augmented test rows to score candidates under: one row per (view, test input)."""

    groups: list[tuple[str, int]]  # (task id, test index) of each group index
    inputs: np.ndarray  # (R, seq_len) uint8 input tokens
    puzzle_identifiers: np.ndarray  # (R,) int64
    group: np.ndarray  # (R,) int64 index into `groups`
    tid: np.ndarray  # (R,) int64 dihedral transform of the view
    perm: np.ndarray  # (R, 10) uint8 colour map of the view

    def __len__(self) -> int:
        return len(self.group)


def pick_views(inputs: np.ndarray, puzzle_identifiers: np.ndarray, identifiers: Sequence[str],
               test_inputs: TestInputs, *, canvas: int, views: int | None) -> Views:
    """Up to `views` views per test input (None = all), from the rows of a voting inference (`run_inference`).

    A task's augmented puzzles are taken in the order their rows come (the dataset's: the original first), and
    a row belongs to test input i when its input is exactly test input i under that puzzle's transform and colour
    map (so a task with several test inputs, repeated rows from noisy passes or pooled checkpoints, and rows of
    tasks not voted for are all handled). Blank padding rows (id 0) are ignored.
    """
    inputs = np.asarray(inputs, dtype=np.uint8)
    pids = np.asarray(puzzle_identifiers).astype(np.int64).reshape(-1)
    groups = [(t, i) for t in test_inputs for i in range(len(test_inputs[t]))]
    group_of = {g: k for k, g in enumerate(groups)}
    picked: list[tuple[int, int, int, np.ndarray]] = []  # (row, group, tid, perm)
    views = len(pids) if views is None else views
    real = np.flatnonzero(pids > 0)
    if views > 0 and len(real):
        uniq, first = np.unique(pids[real], return_index=True)
        uniq = uniq[np.argsort(first, kind="stable")]  # puzzle ids in the order their first rows come
        task_ids, tids, perms = parse_aug_names([identifiers[p] for p in uniq])
        by_task: dict[str, list[int]] = {}
        for k, t in enumerate(task_ids):
            if t in test_inputs:
                by_task.setdefault(t, []).append(k)
        order = real[np.argsort(pids[real], kind="stable")]  # rows grouped by puzzle id, arrival order inside
        sorted_pids = pids[order]
        for t, ks in by_task.items():
            grids = [np.asarray(x, dtype=np.uint8) for x in test_inputs[t]]
            count = [0] * len(grids)
            for k in ks:
                if min(count) >= views:
                    break
                tid, perm = int(tids[k]), perms[k]
                expected = [candidate_tokens(x, tid, perm, canvas) for x in grids]  # None: does not fit
                lo, hi = np.searchsorted(sorted_pids, [uniq[k], uniq[k] + 1])
                taken = [False] * len(grids)
                for row in order[lo:hi]:
                    for i, want in enumerate(expected):
                        if not taken[i] and count[i] < views and want is not None and \
                                np.array_equal(inputs[row], want):
                            taken[i] = True
                            count[i] += 1
                            picked.append((int(row), group_of[(t, i)], tid, perm))
    rows = np.array([p[0] for p in picked], dtype=np.int64)
    seq = inputs.shape[1] if inputs.ndim == 2 else canvas * canvas
    return Views(groups=groups, inputs=inputs[rows] if len(rows) else np.zeros((0, seq), np.uint8),
                 puzzle_identifiers=pids[rows] if len(rows) else np.zeros(0, np.int64),
                 group=np.array([p[1] for p in picked], dtype=np.int64),
                 tid=np.array([p[2] for p in picked], dtype=np.int64),
                 perm=np.array([p[3] for p in picked], dtype=np.uint8).reshape(-1, 10))


# ----------------------------------------------------------------------------------------------------------
# Likelihoods
# ----------------------------------------------------------------------------------------------------------

def label_log_probs(logits, loss_type: str):
    """Per-cell log-probabilities (B, S, V) fp32 as the loss head normalises them (stablemax or softmax)."""
    import torch

    from trm_core.model import log_stablemax

    logits = logits.float()
    if loss_type == "stablemax_cross_entropy":
        return log_stablemax(logits, dim=-1)
    return torch.log_softmax(logits, dim=-1)


@lru_cache(maxsize=4096)
def _encoder(h: int, w: int, tid: int, canvas: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """How `grid_to_tokens(dihedral_transform(g, tid), canvas)` is laid out for any h x w grid g: (the canvas
    with PAD and the EOS border, canvas positions of the cells, the raster index of g each one reads), or None
    when the transformed grid does not fit."""
    moved = dihedral_transform(np.arange(h * w).reshape(h, w), tid)
    h2, w2 = moved.shape
    if h2 > canvas or w2 > canvas or h2 < 1 or w2 < 1:
        return None
    template = grid_to_tokens(np.zeros((h2, w2), dtype=np.uint8), canvas)
    cells = (np.arange(h2)[:, None] * canvas + np.arange(w2)[None, :]).reshape(-1)
    return template, cells, np.ascontiguousarray(moved.reshape(-1))


def candidate_tokens(grid: np.ndarray, tid: int, perm: np.ndarray, canvas: int) -> np.ndarray | None:
    """The label tokens of `grid` seen in view (tid, perm) -- as the builder encodes a test output, i.e.
    `grid_to_tokens(apply_aug(grid, tid, perm), canvas)` -- or None if it does not fit the canvas."""
    grid = np.asarray(grid, dtype=np.uint8)
    if grid.ndim != 2 or not grid.size:
        return None
    enc = _encoder(grid.shape[0], grid.shape[1], int(tid), canvas)
    if enc is None:
        return None
    template, cells, src = enc
    out = template.copy()
    out[cells] = np.asarray(perm, dtype=np.uint8)[grid.reshape(-1)[src]] + COLOR_OFFSET
    return out


def score_candidates(model, views: Views, ranked: Ranked, *, candidates: int, canvas: int | None = None,
                     batch_size: int = 256, steps: int | None = None) -> Ranked:
    """`ranked` with its first `candidates` candidates per test input carrying likelihoods.

    Each view row goes through the model once (`predict`, eval mode, `steps` ACT steps, default eval_steps);
    every candidate of the row's test input is scored against those logits. A candidate gets `logprob` = the
    sum over the views of log p(its tokens | view), `views` = M (views of its test input), `tokens` = scored
    tokens per view. One that does not fit the canvas gets -inf. Test inputs without views keep their
    candidates unscored.
    """
    import torch

    from trm_core import model as trm_model  # looked up at call time (tests substitute predict)

    canvas = canvas or math.isqrt(model.config.seq_len)
    loss_type = model.config.loss_type
    heads = {g: list(ranked.get(g, []))[:candidates] for g in views.groups}
    k_max = max([len(c) for c in heads.values()] + [0])
    total = {g: np.zeros(len(heads[g])) for g in views.groups}
    tokens = {g: np.zeros(len(heads[g]), dtype=np.int64) for g in views.groups}
    n_views = {g: 0 for g in views.groups}
    device = next(model.parameters()).device
    # Each candidate encoded once per dihedral transform (identity colours); a view's colour map is then one
    # lookup (colours c -> perm[c]; PAD and EOS stay), so label building is 8 x K encodings per test input.
    encoded: dict[tuple[tuple[str, int], int], tuple[np.ndarray, np.ndarray]] = {}

    def encodings(g: tuple[str, int], tid: int) -> tuple[np.ndarray, np.ndarray]:
        if (g, tid) not in encoded:
            toks = [candidate_tokens(c.grid, tid, IDENTITY_PERM, canvas) for c in heads[g]]
            ok = np.array([t is not None for t in toks], dtype=bool)
            encoded[(g, tid)] = (np.stack([t if t is not None else np.zeros(canvas * canvas, np.uint8)
                                           for t in toks]) if toks else np.zeros((0, canvas * canvas), np.uint8), ok)
        return encoded[(g, tid)]

    seq = canvas * canvas
    sub = max(1, GATHER_ELEMENTS // max(1, k_max * seq))  # rows whose labels are gathered at once
    if k_max and len(views):
        for lo in range(0, len(views), batch_size):
            hi = min(lo + batch_size, len(views))
            out = trm_model.predict(model, torch.as_tensor(views.inputs[lo:hi].astype(np.int32)),
                                    torch.as_tensor(views.puzzle_identifiers[lo:hi]), steps)
            logp = label_log_probs(out["logits"], loss_type)  # (B, S, V)
            for s_lo in range(lo, hi, sub):
                rows = np.arange(s_lo, min(s_lo + sub, hi))
                labels = np.zeros((len(rows), k_max, seq), dtype=np.int64)
                valid = np.zeros((len(rows), k_max), dtype=bool)
                for b, r in enumerate(rows):
                    toks, ok = encodings(views.groups[views.group[r]], int(views.tid[r]))
                    lut = np.arange(VOCAB_SIZE, dtype=np.int64)
                    lut[COLOR_OFFSET:] = views.perm[r].astype(np.int64) + COLOR_OFFSET
                    labels[b, :len(ok)] = lut[toks]
                    valid[b, :len(ok)] = ok
                lab = torch.as_tensor(labels, device=device).transpose(1, 2)  # (b, S, K)
                got = torch.gather(logp[rows[0] - lo:rows[-1] - lo + 1], 2, lab)  # log p of each candidate's tokens
                mask = lab != PAD
                sums = torch.where(mask, got, torch.zeros((), device=got.device)).sum(1).double().cpu().numpy()
                counts = mask.sum(1).cpu().numpy()
                for b, r in enumerate(rows):
                    g = views.groups[views.group[r]]
                    n = len(heads[g])
                    n_views[g] += 1
                    total[g] += np.where(valid[b, :n], sums[b, :n], -np.inf)
                    tokens[g] = np.where(valid[b, :n], counts[b, :n], tokens[g])
    out_ranked: Ranked = dict(ranked)
    for g, head in heads.items():
        if not head or not n_views[g]:
            continue
        scored = [replace(c, logprob=float(total[g][k]), views=n_views[g], tokens=int(tokens[g][k]))
                  for k, c in enumerate(head)]
        out_ranked[g] = scored + list(ranked[g])[len(head):]
    return out_ranked


# ----------------------------------------------------------------------------------------------------------
# Rules
# ----------------------------------------------------------------------------------------------------------

def rule_score(c: Candidate, rule: str) -> float | None:
    """The rule's number for one candidate (higher is better); None for votes_then_logprob (lexicographic) and
    for a likelihood rule on an unscored candidate."""
    if rule == "votes":
        return float(c.votes)
    if c.logprob is None or rule == "votes_then_logprob":
        return None
    if rule == "poe":
        return c.logprob
    if rule == "mean_logprob":
        return c.logprob / (max(c.views, 1) * max(c.tokens, 1))
    if rule == "hybrid":
        return math.log(max(c.votes, 1)) + c.logprob / max(c.views, 1)
    raise ValueError(f"select rule must be one of {', '.join(SELECT_RULES)}, got {rule!r}")


def _key(c: Candidate, rule: str) -> tuple:
    tail = (-c.votes, -c.mean_q)
    if rule == "votes":
        return tail
    lp = -math.inf if c.logprob is None or math.isnan(c.logprob) else c.logprob
    if rule == "votes_then_logprob":
        return (-c.votes, -lp, -c.mean_q)
    score = rule_score(replace(c, logprob=lp), rule)
    return (-(score if score is not None and not math.isnan(score) else -math.inf),) + tail


def order_candidates(cands: Sequence[Candidate], rule: str, candidates: int) -> list[Candidate]:
    """The first `candidates` of `cands` (a vote-ranked list) re-ranked by `rule`; the rest keep their order."""
    if rule not in SELECT_RULES:
        raise ValueError(f"select rule must be one of {', '.join(SELECT_RULES)}, got {rule!r}")
    head = list(cands)[:candidates]
    order = sorted(range(len(head)), key=lambda k: (_key(head[k], rule), k))
    return [head[k] for k in order] + list(cands)[candidates:]


def apply_rule(ranked: Ranked, rule: str, candidates: int) -> Ranked:
    """Every test input's candidates in the order `rule` gives (see `order_candidates`)."""
    return {g: order_candidates(c, rule, candidates) for g, c in ranked.items()}


def rule_ranks(cands: Sequence[Candidate], candidates: int) -> list[dict[str, int]]:
    """For each of the first `candidates` candidates: its 1-based rank under every rule that applies to it."""
    head = list(cands)[:candidates]
    ranks: list[dict[str, int]] = [{} for _ in head]
    scored = bool(head) and all(c.logprob is not None for c in head)
    for rule in SELECT_RULES if scored else ("votes",):
        for r, k in enumerate(sorted(range(len(head)), key=lambda k: (_key(head[k], rule), k)), 1):
            ranks[k][rule] = r
    return ranks


def candidates_json(cands: Sequence[Candidate], top: int, candidates: int) -> list[dict]:
    """predictions.json records of the first `top` candidates: grid, votes, mean q and, when rescored, the
    likelihood (logprob summed over views, views, tokens), each rule's score and each rule's rank."""
    out = []
    ranks = rule_ranks(cands, candidates)
    for k, c in enumerate(list(cands)[:top]):
        rec: dict[str, Any] = {"grid": np.asarray(c.grid).tolist(), "votes": int(c.votes),
                               "mean_q": round(float(c.mean_q), 6)}
        if c.logprob is not None:
            rec["logprob"] = _finite(c.logprob)
            rec["views"], rec["tokens"] = int(c.views), int(c.tokens)
            rec["scores"] = {r: _finite(rule_score(c, r)) for r in SELECT_RULES if rule_score(c, r) is not None}
        if k < len(ranks) and ranks[k]:
            rec["ranks"] = ranks[k]
        out.append(rec)
    return out


def _finite(x: float | None) -> float | None:
    """JSON-safe: -inf (a candidate that cannot be encoded) is written as null."""
    return None if x is None or not math.isfinite(x) else round(float(x), 6)


# ----------------------------------------------------------------------------------------------------------
# One call for evaluate_model and the bench
# ----------------------------------------------------------------------------------------------------------

def select_attempts(model, arrays: Mapping[str, np.ndarray], identifiers: Sequence[str], test_inputs: TestInputs,
                    ranked: Ranked, selection: Selection, *, batch_size: int = 256,
                    steps: int | None = None) -> tuple[Ranked, Ranked, dict]:
    """Rescore (if the rule needs it) and re-rank the vote-ranked `ranked`.

    Returns (the final ranking, the scored vote ranking -- every rule can be applied to it -- and timings:
    rescore_seconds, rescore_rows, views per test input).
    """
    info: dict[str, Any] = {"select": selection.rule, "rescore_seconds": 0.0, "rescore_rows": 0}
    if not selection.rescores:  # the vote ranking stands as it is (whatever rank_by made it)
        return ranked, ranked, info
    t0 = time.perf_counter()
    canvas = math.isqrt(model.config.seq_len)
    views = pick_views(arrays["inputs"], arrays["puzzle_identifiers"], identifiers, test_inputs, canvas=canvas,
                       views=selection.views)
    scored = score_candidates(model, views, ranked, candidates=selection.candidates, canvas=canvas,
                              batch_size=batch_size, steps=steps)
    info.update(rescore_seconds=round(time.perf_counter() - t0, 3), rescore_rows=len(views),
                views_per_test_input=round(len(views) / max(1, len(views.groups)), 3))
    return apply_rule(scored, selection.rule, selection.candidates), scored, info


def pass_by_rule(scored: Ranked, solutions: Mapping[str, Sequence[Any]], candidates: int,
                 rules: Sequence[str] = SELECT_RULES) -> dict[str, dict[str, float]]:
    """pass@1, pass@2 and pass@K (K = candidates) of each rule on the same scored candidates."""
    out = {}
    for rule in rules:
        overall = pass_at_k(apply_rule(scored, rule, candidates), solutions, (1, 2, max(candidates, 1)))["overall"]
        out[rule] = {"pass@1": overall["pass@1"], "pass@2": overall["pass@2"],
                     "pass@K": overall[f"pass@{max(candidates, 1)}"]}
    return out
