"""Voting, inverse augmentation, pass@K, and the submission writer / validator / scorer (trm_core.evaluate)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trm_core.data.augment import apply_aug, aug_name, crop_tokens, grid_to_tokens, invert_aug, parse_aug_name, \
    random_colour_perm
from trm_core.evaluate import (VoteAccumulator, main_score, main_validate, make_submission, pass_at_k,
                               score_submission, validate_submission, vote, write_submission)

IDENTITY = np.arange(10, dtype=np.uint8)
EMPTY_ROW = np.zeros(900, np.uint8)  # a prediction that starts with PAD: crops to 0x0


class Rows:
    """Builds (inputs, preds, puzzle ids, q logits, identifiers) the way the dataset and model lay them out."""

    def __init__(self):
        self.identifiers = ["<blank>"]
        self.inputs, self.preds, self.pids, self.q = [], [], [], []

    def add(self, task_id, test_input, pred, q=0.0, tid=0, perm=IDENTITY):
        name = aug_name(task_id, tid, perm)
        if name not in self.identifiers:
            self.identifiers.append(name)
        test_input = np.asarray(test_input, np.uint8)
        self.inputs.append(grid_to_tokens(apply_aug(test_input, tid, perm)))
        pred = EMPTY_ROW if pred is None else grid_to_tokens(apply_aug(np.asarray(pred, np.uint8), tid, perm))
        self.preds.append(pred)
        self.pids.append(self.identifiers.index(name))
        self.q.append(q)
        return self

    def arrays(self):
        return np.stack(self.inputs), np.stack(self.preds), np.array(self.pids, np.int32), np.array(self.q, np.float32)

    def vote(self, test_inputs, **kw):
        return vote(*self.arrays(), self.identifiers, test_inputs, **kw)


X = [[1, 2], [3, 4]]  # a test input
A, B, C = [[5]], [[6, 6]], [[7], [7]]  # three candidate answers


def summary(cands):
    return [(c.grid.tolist(), c.votes) for c in cands]


def test_vote_ranks_by_count_then_mean_q():
    rows = Rows()
    for q in (0.0, 0.0, 0.0):
        rows.add("t", X, A, q)
    rows.add("t", X, B, -2.0).add("t", X, B, -2.0)
    rows.add("t", X, C, 3.0).add("t", X, C, 3.0)
    cands = rows.vote({"t": [X]})[("t", 0)]
    assert summary(cands) == [(A, 3), (C, 2), (B, 2)]
    assert cands[0].mean_q == pytest.approx(0.5)
    assert cands[1].mean_q == pytest.approx(1 / (1 + np.exp(-3.0)))


def test_exact_ties_go_to_the_grid_seen_first():
    rows = Rows().add("t", X, B).add("t", X, A).add("t", X, A).add("t", X, B)
    assert summary(rows.vote({"t": [X]})[("t", 0)]) == [(B, 2), (A, 2)]


@pytest.mark.parametrize("rank_by, expected", [("votes", [A, B, C]), ("q", [C, B, A]), ("votes_then_q", [A, C, B])])
def test_ranking_rule_is_a_parameter(rank_by, expected):
    rows = Rows().add("t", X, A, -1).add("t", X, A, -1).add("t", X, A, -1)
    rows.add("t", X, B, 0).add("t", X, B, 0).add("t", X, C, 2).add("t", X, C, 2)
    assert [c.grid.tolist() for c in rows.vote({"t": [X]}, rank_by=rank_by)[("t", 0)]] == expected


def test_single_candidate_and_test_input_without_candidates():
    rows = Rows().add("t", X, A, 1.0).add("u", [[0]], None)  # u's only prediction is empty (0x0)
    ranked = rows.vote({"t": [X], "u": [[[0]]], "v": [[[3]]]})  # v has no row at all
    assert summary(ranked[("t", 0)]) == [(A, 1)]
    assert ranked[("u", 0)] == [] and ranked[("v", 0)] == []


def test_blank_rows_and_tasks_not_voted_for_are_ignored():
    rows = Rows().add("t", X, A).add("other", X, B)
    inputs, preds, pids, q = rows.arrays()
    pids = np.append(pids, 0)  # a padding row (blank puzzle id 0)
    inputs, preds, q = np.vstack([inputs, inputs[:1]]), np.vstack([preds, preds[:1]]), np.append(q, 0)
    acc = VoteAccumulator(rows.identifiers, {"t": [X]})
    acc.add(inputs, preds, pids, q)
    assert summary(acc.ranked()[("t", 0)]) == [(A, 1)]
    assert acc.stats["blank_rows"] == 1 and acc.stats["unknown_task_rows"] == 1


@pytest.mark.parametrize("tid", range(8))
def test_inverse_augmentation_recovers_the_answer(tid):
    rng = np.random.default_rng(tid)
    test_input = rng.integers(0, 10, (3, 5)).astype(np.uint8)
    answer = rng.integers(0, 10, (4, 2)).astype(np.uint8)
    rows = Rows()
    for _ in range(5):  # five random colour maps, all with transform `tid`, each predicting the true answer
        rows.add("t", test_input, answer, tid=tid, perm=random_colour_perm(rng))
    ranked = rows.vote({"t": [test_input.tolist()]})
    assert summary(ranked[("t", 0)]) == [(answer.tolist(), 5)]


def test_rows_are_assigned_to_the_test_input_they_came_from():
    rng = np.random.default_rng(0)
    x0, x1 = [[1, 1], [2, 2]], [[1, 2], [1, 2]]  # same size: only the content tells them apart
    rows = Rows()
    for tid in range(8):
        perm = random_colour_perm(rng)
        rows.add("t", x0, A, tid=tid, perm=perm).add("t", x1, B, tid=tid, perm=perm)
    ranked = rows.vote({"t": [x0, x1]})
    assert summary(ranked[("t", 0)]) == [(A, 8)] and summary(ranked[("t", 1)]) == [(B, 8)]


def _reference_vote(inputs, preds, pids, q, identifiers, test_inputs):
    """A straightforward per-row version of upstream's loop, to check the vectorised one against."""
    votes = {}
    for i in range(len(pids)):
        task_id, tid, perm = parse_aug_name(identifiers[pids[i]])
        x = invert_aug(crop_tokens(inputs[i]), tid, perm)
        y = invert_aug(crop_tokens(preds[i]), tid, perm)
        k = next((j for j, g in enumerate(test_inputs.get(task_id, [])) if np.array_equal(g, x)), None)
        if k is None or y.size == 0:
            continue
        entry = votes.setdefault((task_id, k), {}).setdefault(y.tobytes() + bytes(y.shape), [y, 0, 0.0])
        entry[1] += 1
        entry[2] += 1 / (1 + np.exp(-float(q[i])))
    return {key: sorted(([g.tolist(), n, s / n] for g, n, s in d.values()), key=lambda e: (e[1], e[2]), reverse=True)
            for key, d in votes.items()}


def test_vote_matches_a_per_row_reference_on_random_predictions():
    rng = np.random.default_rng(1)
    test_inputs = {f"task{k}": [rng.integers(0, 10, (rng.integers(1, 6), rng.integers(1, 6))).tolist()
                                for _ in range(rng.integers(1, 3))] for k in range(4)}
    answers = [rng.integers(0, 10, (2, 3)).astype(np.uint8), rng.integers(0, 10, (3, 2)).astype(np.uint8), None]
    rows = Rows()
    for task_id, xs in test_inputs.items():
        for _ in range(30):
            tid, perm = int(rng.integers(8)), random_colour_perm(rng)
            for x in xs:
                rows.add(task_id, x, answers[rng.integers(3)], float(rng.normal()), tid, perm)
    ours = rows.vote(test_inputs)
    ref = _reference_vote(*rows.arrays(), rows.identifiers, test_inputs)
    assert set(k for k, v in ours.items() if v) == set(ref)
    for key, cands in ref.items():
        assert [(c.grid.tolist(), c.votes) for c in ours[key]] == [(g, n) for g, n, _ in cands]
        assert [c.mean_q for c in ours[key]] == pytest.approx([m for _, _, m in cands])


def test_votes_come_from_one_evaluation_unless_pooled():
    rows_a, rows_b = Rows().add("t", X, A).add("t", X, A), Rows().add("t", X, B).add("t", X, B).add("t", X, B)
    acc_a = VoteAccumulator(rows_a.identifiers, {"t": [X]})
    acc_a.add(*rows_a.arrays())
    acc_b = VoteAccumulator(rows_b.identifiers, {"t": [X]})
    acc_b.add(*rows_b.arrays())
    assert summary(acc_a.ranked()[("t", 0)]) == [(A, 2)]
    assert summary(acc_b.ranked()[("t", 0)]) == [(B, 3)]
    assert summary(VoteAccumulator.pooled([acc_a, acc_b]).ranked()[("t", 0)]) == [(B, 3), (A, 2)]


def test_accumulating_in_small_batches_equals_one_batch():
    rng = np.random.default_rng(2)
    rows = Rows()
    for i in range(40):
        answer, q = [A, B, C][rng.integers(3)], float(rng.normal())
        rows.add("t", X, answer, q, int(rng.integers(8)), random_colour_perm(rng))
    arrays = rows.arrays()
    acc = VoteAccumulator(rows.identifiers, {"t": [X]}, flush_rows=7)
    for lo in range(0, 40, 5):
        acc.add(*(a[lo:lo + 5] for a in arrays))
    assert summary(acc.ranked()[("t", 0)]) == summary(rows.vote({"t": [X]})[("t", 0)])


# --- pass@K -------------------------------------------------------------------------------------------------

def _cands(*grids):
    from trm_core.evaluate import Candidate

    return [Candidate(np.array(g, np.uint8), 10 - i, 0.5) for i, g in enumerate(grids)]


def test_pass_at_k_is_the_per_task_fraction_averaged_over_tasks():
    ranked = {("a", 0): _cands(A, B), ("a", 1): _cands(B, C, A),  # truth at rank 1 and rank 3
              ("b", 0): _cands(C)}  # task b: truth not among its candidates
    solutions = {"a": [A, A], "b": [A], "c": [A]}  # task c: no candidates at all
    result = pass_at_k(ranked, solutions, ks=(1, 2, 3))
    assert result["per_task"]["a"] == {"pass@1": 0.5, "pass@2": 0.5, "pass@3": 1.0}
    assert result["per_task"]["b"] == result["per_task"]["c"] == {"pass@1": 0.0, "pass@2": 0.0, "pass@3": 0.0}
    assert result["overall"] == pytest.approx({"pass@1": 0.5 / 3, "pass@2": 0.5 / 3, "pass@3": 1 / 3})


def test_pass_at_k_compares_shapes_not_just_values():
    assert pass_at_k({("a", 0): _cands([[5, 5]])}, {"a": [[[5], [5]]]}, ks=(1,))["overall"]["pass@1"] == 0.0


# --- submission ---------------------------------------------------------------------------------------------

CHALLENGES = {"a": {"train": [], "test": [{"input": X}, {"input": [[9]]}]},
              "b": {"train": [], "test": [{"input": [[1]]}]}}


def test_submission_is_complete_with_the_test_input_as_fallback():
    sub = make_submission(CHALLENGES, {("a", 0): _cands(A, B, C), ("a", 1): _cands(C)})
    assert sub == {"a": [{"attempt_1": A, "attempt_2": B}, {"attempt_1": C, "attempt_2": [[9]]}],
                   "b": [{"attempt_1": [[1]], "attempt_2": [[1]]}]}
    assert validate_submission(sub, CHALLENGES) == []
    assert make_submission(CHALLENGES, {}, fallback="zeros")["b"] == [{"attempt_1": [[0]], "attempt_2": [[0]]}]


def test_write_submission_is_atomic_and_round_trips(tmp_path):
    sub = make_submission(CHALLENGES, {})
    path = write_submission(tmp_path / "submission.json", sub)
    assert json.loads(path.read_text()) == sub
    assert [p.name for p in tmp_path.iterdir()] == ["submission.json"]  # no temp file left behind


def _valid():
    return make_submission(CHALLENGES, {})


def _broken(edit):
    sub = _valid()
    edit(sub)
    return sub


BROKEN = {
    "missing task": (lambda s: s.pop("b"), "task b: missing"),
    "extra task": (lambda s: s.update(zzz=[]), "task zzz: not in the challenges file"),
    "not a list": (lambda s: s.update(b={"attempt_1": [[1]]}), "task b: must be a list"),
    "too few test entries": (lambda s: s["a"].pop(), "task a: 1 entries for 2 test inputs"),
    "entry not a dict": (lambda s: s["b"].__setitem__(0, [[1]]), "task b test 0: must be an object"),
    "missing attempt": (lambda s: s["b"][0].pop("attempt_2"), "task b test 0: missing attempt_2"),
    "extra key": (lambda s: s["b"][0].update(attempt_3=[[1]]), "unexpected keys ['attempt_3']"),
    "grid not a list": (lambda s: s["b"][0].update(attempt_1="[[1]]"), "attempt_1: grid must be a list"),
    "empty grid": (lambda s: s["b"][0].update(attempt_1=[]), "attempt_1: grid has no rows"),
    "empty row": (lambda s: s["b"][0].update(attempt_1=[[]]), "attempt_1: grid has an empty row"),
    "row not a list": (lambda s: s["b"][0].update(attempt_1=[1, 2]), "attempt_1: rows [0, 1] are not lists"),
    "not rectangular": (lambda s: s["b"][0].update(attempt_1=[[1, 2], [3]]), "not rectangular"),
    "value above 9": (lambda s: s["b"][0].update(attempt_1=[[10]]), "outside the integers 0..9"),
    "negative value": (lambda s: s["b"][0].update(attempt_1=[[-1]]), "outside the integers 0..9"),
    "float value": (lambda s: s["b"][0].update(attempt_1=[[1.5]]), "outside the integers 0..9"),
    "bool value": (lambda s: s["b"][0].update(attempt_1=[[True]]), "outside the integers 0..9"),
    "too many rows": (lambda s: s["b"][0].update(attempt_1=[[1]] * 31), "31 rows, more than 30"),
    "too many columns": (lambda s: s["b"][0].update(attempt_1=[[1] * 31]), "31 columns, more than 30"),
}


@pytest.mark.parametrize("kind", BROKEN)
def test_validator_catches_each_kind_of_broken_submission(kind):
    edit, message = BROKEN[kind]
    problems = validate_submission(_broken(edit), CHALLENGES)
    assert len(problems) == 1 and message in problems[0], problems


def test_validator_reports_every_problem_and_unreadable_files(tmp_path):
    sub = _valid()
    sub.pop("b")
    sub["a"][0]["attempt_1"] = [[10, 1], [1]]
    assert len(validate_submission(sub, CHALLENGES)) == 3  # missing task, bad value, not rectangular
    bad = tmp_path / "submission.json"
    bad.write_text("{not json")
    assert validate_submission(bad, CHALLENGES)[0].startswith(f"{bad}: not readable as JSON")
    assert validate_submission([], CHALLENGES)[0].startswith("submission: top level must be a JSON object")


def test_validate_cli_exit_code_and_one_line_per_problem(tmp_path, capsys):
    chal = tmp_path / "challenges.json"
    chal.write_text(json.dumps(CHALLENGES))
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    write_submission(good, _valid())
    write_submission(bad, _broken(lambda s: (s.pop("b"), s["a"].pop())))
    assert main_validate([str(good), str(chal)]) == 0
    assert capsys.readouterr().out.strip() == "valid"
    assert main_validate([str(bad), str(chal)]) == 1
    assert len(capsys.readouterr().out.strip().splitlines()) == 2


def test_scorer_agrees_with_a_hand_count(tmp_path, capsys):
    solutions = {"a": [A, [[9]]], "b": [[[2]]]}
    sub = {"a": [{"attempt_1": B, "attempt_2": A},  # right on the second attempt
                 {"attempt_1": [[9]], "attempt_2": [[9]]}],  # right on the first
           "b": [{"attempt_1": [[1]], "attempt_2": [[2, 2]]}]}  # wrong (shape differs)
    score, per_task = score_submission(sub, solutions)
    assert per_task == {"a": [True, True], "b": [False]} and score == pytest.approx(2 / 3)
    sub.pop("b")  # a missing task scores 0, it does not crash the scorer
    assert score_submission(sub, solutions)[0] == pytest.approx(2 / 3)
    path, sol_path = tmp_path / "s.json", tmp_path / "sol.json"
    write_submission(path, sub)
    sol_path.write_text(json.dumps(solutions))
    assert main_score([str(path), str(sol_path)]) == 0
    out = capsys.readouterr().out
    assert "a  2/2  1 1" in out and "b  0/1  0" in out and "score 0.6667 (2/3 test outputs, 2 tasks)" in out


def test_validator_reads_gzipped_challenges(arc_dir):
    from trm_core.data.arc import load_challenges_json

    path = arc_dir / "arc-agi_evaluation2_challenges.json.gz"
    sub = make_submission(load_challenges_json(path), {})
    assert validate_submission(sub, path) == []


def test_parse_aug_names_agrees_with_parse_aug_name():
    from trm_core.evaluate import parse_aug_names

    rng = np.random.default_rng(3)
    names = ["007bbfb7", "a|||b|||t0|||0123456789"] + [aug_name(f"task{i}", i % 8, random_colour_perm(rng))
                                                     for i in range(20)]
    task_ids, tids, perms = parse_aug_names(names)
    for name, t, tid, perm in zip(names, task_ids, tids, perms):
        ref = parse_aug_name(name)
        assert (t, int(tid), perm.tolist()) == (ref[0], ref[1], ref[2].tolist())
    with pytest.raises(ValueError, match="not an augmented puzzle name"):
        parse_aug_names(names + ["x|||t9|||0123456789"])


def test_a_test_input_repeated_within_a_task_gets_the_votes_of_both():
    rows = Rows().add("t", X, A).add("t", X, A)
    ranked = rows.vote({"t": [X, X]})
    assert summary(ranked[("t", 0)]) == summary(ranked[("t", 1)]) == [(A, 2)]


def test_a_row_whose_input_matches_no_test_input_is_not_counted():
    rows = Rows().add("t", X, A).add("t", [[1, 2, 3]], B)  # the second input is not a test input of t
    acc = VoteAccumulator(rows.identifiers, {"t": [X]})
    acc.add(*rows.arrays())
    assert summary(acc.ranked()[("t", 0)]) == [(A, 1)] and acc.stats["unmatched_input_rows"] == 1


def test_malformed_predictions_are_cropped_as_upstream_crops_them():
    """Jagged rows, colours past EOS, missing EOS, PAD holes: the fast path must agree with upstream's crop."""
    rng = np.random.default_rng(4)
    rows = Rows()
    for _ in range(300):
        rows.add("t", X, rng.integers(0, 10, (rng.integers(1, 6), rng.integers(1, 6))), float(rng.normal()),
                 int(rng.integers(8)), random_colour_perm(rng))
    inputs, preds, pids, q = rows.arrays()
    grid = preds.reshape(-1, 30, 30)
    for i in range(len(grid)):
        for _ in range(rng.integers(0, 4)):  # corrupt up to 3 cells near the grid with any token
            grid[i, rng.integers(0, 7), rng.integers(0, 7)] = rng.integers(0, 12)
    ours = vote(inputs, preds, pids, q, rows.identifiers, {"t": [X]})[("t", 0)]
    ref = _reference_vote(inputs, preds, pids, q, rows.identifiers, {"t": [np.array(X)]})[("t", 0)]
    assert [(c.grid.tolist(), c.votes) for c in ours] == [(g, n) for g, n, _ in ref]


def test_pooling_ranked_lists_agrees_with_pooling_the_votes_themselves():
    from trm_core.voting import pool_ranked

    rows_a = Rows().add("t", X, A, q=2.0).add("t", X, A).add("t", X, C, q=1.0)
    rows_b = Rows().add("t", X, B).add("t", X, B).add("t", X, C, q=-1.0).add("t", X, C)
    accs = []
    for rows in (rows_a, rows_b):
        accs.append(VoteAccumulator(rows.identifiers, {"t": [X]}))
        accs[-1].add(*rows.arrays())
    pooled = pool_ranked([acc.ranked() for acc in accs])[("t", 0)]
    expected = VoteAccumulator.pooled(accs).ranked()[("t", 0)]
    assert summary(pooled) == summary(expected) == [(C, 3), (A, 2), (B, 2)]
    assert [c.mean_q for c in pooled] == pytest.approx([c.mean_q for c in expected])


def test_trm_pool_writes_one_submission_from_two_predictions_files(tmp_path, capsys):
    from trm_core.submission import main_pool

    challenges = {"t": {"train": [], "test": [{"input": X}]}, "u": {"train": [], "test": [{"input": X}]}}
    (tmp_path / "c.json").write_text(json.dumps(challenges))
    (tmp_path / "s.json").write_text(json.dumps({"t": [B], "u": [X]}))

    def predictions(name, cands):
        path = tmp_path / name
        path.write_text(json.dumps({"rank_by": "votes_then_q", "tasks": {"t": [{"input": X, "truth": None,
                                    "candidates": [{"grid": g, "votes": v, "mean_q": 0.5} for g, v in cands]}]}}))
        return str(path)

    a, b = predictions("a.json", [(A, 3), (B, 2)]), predictions("b.json", [(B, 2), (C, 1)])
    out = tmp_path / "submission.json"
    assert main_pool([a, b, "--challenges", str(tmp_path / "c.json"), "--output", str(out),
                      "--solutions", str(tmp_path / "s.json")]) == 0
    sub = json.loads(out.read_text())
    assert sub["t"] == [{"attempt_1": B, "attempt_2": A}]  # 4 pooled votes beat 3
    assert sub["u"] == [{"attempt_1": X, "attempt_2": X}]  # no predictions: the fallback
    assert "score 1.0000 (2/2 test outputs)" in capsys.readouterr().out
    assert main_pool([str(tmp_path / "c.json"), "--challenges", str(tmp_path / "c.json"), "--output",
                      str(out)]) == 2  # not a predictions file: a clear error, not a traceback


def test_empty_predictions_take_votes_only_when_counted_as_upstream_and_are_never_submitted():
    rows = Rows().add("t", X, None).add("t", X, None).add("t", X, None).add("t", X, A, q=1.0)
    assert summary(rows.vote({"t": [X]})[("t", 0)]) == [(A, 1)]  # default: a 0x0 crop is no answer
    counted = rows.vote({"t": [X]}, count_empty=True)[("t", 0)]
    assert summary(counted) == [([], 3), (A, 1)]  # upstream hashes the empty grid like any other
    assert counted[0].grid.shape == (0, 0)
    assert pass_at_k({("t", 0): counted}, {"t": [A]}, ks=(1, 2))["overall"] == {"pass@1": 0.0, "pass@2": 1.0}
    sub = make_submission({"t": {"train": [], "test": [{"input": X}]}}, {("t", 0): counted})
    assert sub["t"][0] == {"attempt_1": A, "attempt_2": X}  # the empty grid is skipped, the fallback fills in


def test_vote_pool_pools_every_evaluation_as_upstreams_aggregated_voting():
    from trm_core.voting import VotePool

    evaluations = [Rows().add("t", X, A, q=2.0).add("t", X, C, q=1.0),
                   Rows().add("t", X, C).add("t", X, B),
                   Rows().add("t", X, B).add("t", X, B, q=-1.0)]
    pool, accs = VotePool(), []
    for rows in evaluations:
        accs.append(VoteAccumulator(rows.identifiers, {"t": [X]}))
        accs[-1].add(*rows.arrays())
        pooled = pool.add(accs[-1].ranked())
        expected = VoteAccumulator.pooled(accs).ranked()  # every row of every evaluation so far, voted at once
        assert summary(pooled[("t", 0)]) == summary(expected[("t", 0)])
        assert [c.mean_q for c in pooled[("t", 0)]] == pytest.approx([c.mean_q for c in expected[("t", 0)]])
    assert pool.evaluations == 3 and summary(pooled[("t", 0)]) == [(B, 3), (C, 2), (A, 1)]
    again = VotePool()
    again.load_state_dict(json.loads(json.dumps(pool.state_dict())))  # plain data: survives a train state
    assert again.evaluations == 3 and summary(again.ranked[("t", 0)]) == summary(pooled[("t", 0)])
