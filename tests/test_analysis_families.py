"""eval.analysis families and claim (c): verdicts on synthetic trials whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from conftest import REPO
from eval.analysis import analyse, claim_a, claim_b, claim_c, claim_d, resolve_plan, vs_baseline
from eval.analysis.core import FAILS, HOLDS, OPEN, UNMEASURED
from eval.analysis.inference import holm, mde
from eval.analysis.samples import kl_to_uniform, labeller_table
from eval.analysis.trials_table import read_trials

SEEDS = [0, 1, 2, 3, 4]
OFFSET = np.array([0.0, 3.0, -2.0, 5.0, 1.0])     # a per-seed offset shared by every method
METHODS = [{"name": "random"}, {"name": "el2n"},
           {"name": "clustering", "label": "clustering_farthest", "embedder": "effnet_lite0", "k": 10},
           {"name": "clustering", "label": "clustering_nearest", "keep": "nearest", "k": 10}]
# fd shift against full data, and mem_nn_mean slope per unit ratio, per method
SHIFT = {"random": 0.0, "el2n": 20.0, "clustering_farthest": -3.0, "clustering_nearest": 0.5}
SLOPE = {"random": 0.0, "el2n": 0.4, "clustering_farthest": -0.4, "clustering_nearest": 0.0}


def _trials(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i, s in enumerate(SEEDS):
        rows.append({"dataset": "d", "method": "full", "ratio": 0.0, "seed": s,
                     "fd_cls": 50 + OFFSET[i] + rng.normal(0, 0.1), "f_score_cls": 0.5 + OFFSET[i] / 100,
                     "mem_nn_mean_cls": 1.0 + OFFSET[i] / 10})
        for m in SHIFT:
            for r in (0.5, 0.9):
                rows.append({"dataset": "d", "method": m, "ratio": r, "seed": s,
                             "fd_cls": 50 + OFFSET[i] + SHIFT[m] + rng.normal(0, 0.3),
                             "f_score_cls": 0.5 + OFFSET[i] / 100 - SHIFT[m] / 100 + rng.normal(0, 0.003),
                             "mem_nn_mean_cls": 1.0 + OFFSET[i] / 10 + SLOPE[m] * r + rng.normal(0, 0.01)})
    return pd.DataFrame(rows)


@pytest.fixture
def plan():
    return resolve_plan({"high_ratio": 0.5}, "classifier", METHODS, ["classifier", "effnet_lite0"])


def _row(rows, method, metric, ratio=None, against=None):
    return next(v for v in rows if v.method == method and v.metric == metric
                and (ratio is None or v.ratio == ratio) and (against is None or v.against == against))


def test_plan_resolves_the_code_default_contestant(plan):
    assert plan.metrics == ("f_score_cls", "fd_cls")
    assert plan.trend_metrics == ("mem_nn_mean_cls", "mem_copy_rate_cls")
    assert plan.contestant == "clustering_farthest" and plan.exploratory == ("clustering_nearest",)
    assert plan.circular == ()   # the clustering methods select in effnet_lite0, not classifier


def test_claim_a_tost_verdicts(plan):
    rows = claim_a(_trials(), plan, "d")
    assert {v.claim for v in rows} == {"a"} and all(v.result.test == "TOST paired" for v in rows)
    assert _row(rows, "random", "fd_cls", 0.9).verdict == HOLDS
    el2n = _row(rows, "el2n", "fd_cls", 0.9)
    assert el2n.verdict == FAILS and "worse beyond the margin" in el2n.note
    assert _row(rows, "clustering_farthest", "f_score_cls", 0.9).verdict in (HOLDS, OPEN)
    # one Holm family per metric; the MDE is stated at alpha / m
    fam = [v for v in rows if v.metric == "fd_cls"]
    assert len(fam) == 8
    assert [v.p_holm for v in fam] == pytest.approx(list(holm([v.result.p for v in fam])))


def test_pairing_by_seed_finds_what_welch_cannot(plan):
    rows = vs_baseline(_trials(), plan, "d")
    v = _row(rows, "clustering_farthest", "fd_cls", 0.9)
    assert (v.result.test, v.result.df, v.result.n) == ("paired t", 4, 5)
    assert v.verdict == HOLDS and v.result.effect == pytest.approx(-3.0, abs=0.5)
    assert _row(rows, "el2n", "fd_cls", 0.9).verdict == FAILS
    m = len([x for x in rows if x.family == v.family])
    assert v.result.mde == pytest.approx(mde(v.result.se, 4, plan.alpha / m, plan.power))
    # the same numbers unpaired: the per-seed offsets swamp the 3-point difference
    df = _trials()
    from eval.analysis.inference import welch_t
    a = df[(df.method == "clustering_farthest") & (df.ratio == 0.9)]["fd_cls"]
    b = df[(df.method == "random") & (df.ratio == 0.9)]["fd_cls"]
    assert welch_t(a, b).p > 0.05


def test_welch_when_no_seed_is_common(plan):
    df = _trials()
    df = df[~((df.method == "random") & df.seed.isin([0, 1, 2]))]
    df = df[~((df.method == "el2n") & df.seed.isin([3, 4]))]
    v = _row(vs_baseline(df, plan, "d"), "el2n", "fd_cls", 0.9)
    assert v.result.test == "Welch t" and "Welch" in v.note


def test_claim_b_contestant_confirmatory_variants_exploratory(plan):
    rows = claim_b(_trials(), plan, "d")
    conf = [v for v in rows if v.claim == "b" and v.metric == "fd_cls"]
    assert {v.method for v in conf} == {"clustering_farthest"}
    assert {v.against for v in conf} == {"random", "el2n"}         # non-clustering only
    assert all(v.verdict == HOLDS for v in conf)
    expl = [v for v in rows if v.claim == "b-exploratory"]
    assert expl and all(v.exploratory and v.method == "clustering_nearest" for v in expl)


def test_claim_b_without_the_contestant_is_not_measured():
    p = resolve_plan(None, "classifier", [m for m in METHODS if m.get("label") != "clustering_farthest"])
    assert p.contestant is None
    rows = claim_b(_trials(), p, "d")
    conf = [v for v in rows if v.claim == "b"]
    assert len(conf) == 2 and all(v.verdict == UNMEASURED and "code-default" in v.note for v in conf)
    assert all(v.exploratory for v in rows if v.claim == "b-exploratory")


def test_a_family_without_high_ratios_says_so(plan):
    df = _trials()
    low = df[df.ratio < 0.6]
    p = resolve_plan({"high_ratio": 0.75}, "classifier", METHODS)
    rows = claim_a(low, p, "d") + vs_baseline(low, p, "d")
    assert len(rows) == 4 and all(v.verdict == UNMEASURED and "ratio >= 0.75" in v.note for v in rows)


def test_claim_d_per_seed_slopes(plan):
    rows = claim_d(_trials(), plan, "d")
    nn = {v.method: v for v in rows if v.metric == "mem_nn_mean_cls"}
    assert nn["clustering_farthest"].verdict == HOLDS            # closer as more is removed
    assert nn["el2n"].verdict == FAILS                           # farther
    assert nn["random"].verdict == OPEN
    assert nn["el2n"].result.df == 4 and nn["el2n"].result.effect == pytest.approx(0.4, abs=0.05)
    copy = [v for v in rows if v.metric == "mem_copy_rate_cls"]
    assert len(copy) == 1 and copy[0].verdict == UNMEASURED


def test_analyse_covers_every_family_and_rows_carry_the_numbers(plan):
    rows = analyse(_trials(), plan)
    assert {v.claim for v in rows} == {"a", "baseline", "b", "b-exploratory", "d"}
    for v in rows:
        assert v.verdict in (HOLDS, FAILS, OPEN, UNMEASURED)
        if v.verdict != UNMEASURED:
            r = v.row()
            assert all(math.isfinite(r[k]) for k in ("effect", "ci_lo", "ci_hi", "p", "df", "p_holm", "mde"))


# ---- claim (c) --------------------------------------------------------------------------

SKEW_METHODS = [{"name": "random"},
                {"name": "clustering", "label": "clustering_balanced", "mode": "balanced"}]


def _skewed(pred: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    rows = []
    for s in SEEDS:
        for m, r, skew in (("full", 0.0, 0.6), ("random", 0.5, 0.6), ("clustering_balanced", 0.5, 0.35)):
            p = np.array([skew, (1 - skew) / 2, (1 - skew) / 2]) + rng.normal(0, 0.01, 3) + s / 200
            p = p / p.sum()
            row = {"dataset": "sk", "method": m, "ratio": r, "seed": s, "fd_cls": 10.0 + s,
                   **{f"cov_share_{c}_cls": p[c] for c in range(3)},
                   **{f"cov_share_{c}_effnet": p[::-1][c] for c in range(3)},
                   "subset_share_0": skew, "subset_share_1": (1 - skew) / 2, "subset_share_2": (1 - skew) / 2}
            if pred:
                q = 0.8 * p + 0.2 / 3
                row.update({f"cov_pred_share_{c}_cls": q[c] for c in range(3)}, classifier_accuracy=0.91)
            rows.append(row)
    return pd.DataFrame(rows)


def test_kl_to_uniform_by_hand():
    # p = (1/2, 1/2, 0, 0), C = 4: 2 * 1/2 * log(1/2 * 4) = log 2
    assert kl_to_uniform(np.array([[0.5, 0.5, 0.0, 0.0]]))[0] == pytest.approx(math.log(2))
    assert kl_to_uniform(np.full((1, 5), 0.2))[0] == pytest.approx(0.0)


def test_kl_to_uniform_matches_the_committed_coverage_metric():
    df = read_trials(REPO / "benchmarks/results/skewed_29dde61b_2026-12-02.trials.csv")
    shares = df[[f"cov_share_{c}_cls" for c in range(10)]].to_numpy()
    assert kl_to_uniform(shares) == pytest.approx(df["cov_kl_uniform_cls"].to_numpy(), abs=1e-9)


def test_claim_c_both_labellers():
    p = resolve_plan(None, "classifier", SKEW_METHODS)
    assert p.balanced == "clustering_balanced"
    rows = claim_c(_skewed(), p, "sk")
    fams = {v.metric: v for v in rows}
    assert set(fams) == {"kl_uniform[pred_cls]", "kl_uniform[nn_cls]", "kl_uniform[nn_effnet]"}
    assert fams["kl_uniform[pred_cls]"].verdict == HOLDS and not fams["kl_uniform[pred_cls]"].exploratory
    assert fams["kl_uniform[nn_cls]"].exploratory and "unvalidated" in fams["kl_uniform[nn_cls]"].note
    table = labeller_table(_skewed(), p)
    full = table[table.method == "full"].iloc[0]
    assert full["kl_subset"] == pytest.approx(kl_to_uniform(np.array([[0.6, 0.2, 0.2]]))[0])
    assert full["classifier_accuracy"] == pytest.approx(0.91)
    assert str(full["agree_cls"]).startswith("<= ")              # bound from the share vectors


def test_claim_c_without_the_classifier_says_not_measured():
    p = resolve_plan(None, "classifier", SKEW_METHODS)
    rows = claim_c(_skewed(pred=False), p, "sk")
    assert rows[0].verdict == UNMEASURED and "cov_pred_share" in rows[0].note
    table = labeller_table(_skewed(pred=False), p)
    assert (table["classifier_accuracy"] == "not measured").all()
    assert (table["agree_cls"] == "not measured").all()
