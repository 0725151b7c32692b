"""eval.analysis.welch_tables (the report stage's verdicts.md) and the trials.csv table
(eval.analysis.trials_table): verdicts from per-seed trials, on hand-made data whose
answer is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from eval.analysis import welch_tables as pc
from eval.analysis.inference import holm
from eval.analysis.trials_table import TrialsError, check_trials, read_trials

OFFSETS = [-2.0, -1.0, 0.0, 1.0, 2.0]        # per-seed deviations: mean 0, std 1.58


def _trials(spec: dict, dataset: str = "d", metric: str = "fd_effnet") -> pd.DataFrame:
    """spec: {(method, ratio): [per-seed values]} -> a validated trials table."""
    rows = [{"dataset": dataset, "method": m, "ratio": r, "seed": s, metric: v}
            for (m, r), vals in spec.items() for s, v in enumerate(vals)]
    return check_trials(pd.DataFrame(rows))


def _around(mean: float, n: int, scale: float = 1.0) -> list[float]:
    """n values with mean ``mean``: offsets -2..2 (n = 5), -1, 0, 1 (n = 3), -1, 1 (n = 2)."""
    return {5: [mean + scale * o for o in OFFSETS], 3: [mean - scale, mean, mean + scale],
            2: [mean - scale, mean + scale]}[n]


def test_large_clean_difference_with_5_seeds_is_significant_small_with_2_is_not():
    rng = np.random.default_rng(0)
    big = pc.compare([(np.array(_around(130, 5)), np.array(_around(100, 5)))], True, rng, 500)[0]
    assert big["verdict"] == "significantly worse" and big["p_holm"] < 1e-6
    small = pc.compare([(np.array(_around(101, 2)), np.array(_around(100, 2)))], True, rng, 500)[0]
    assert small["verdict"] == "not significant (n = 2 seeds)"
    ref = stats.ttest_ind(_around(101, 2), _around(100, 2), equal_var=False)
    assert small["welch"].p == pytest.approx(ref.pvalue) and small["welch"].df == pytest.approx(2.0)
    # |t| > 2 used to be called significant; at 2 seeds (df 2) it is not, even uncorrected
    two = pc.compare([([100.0, 101.0], [103.0, 104.0])], True, rng, 500)[0]
    assert abs(two["welch"].t) > 2 and two["welch"].p > 0.05 and two["verdict"].startswith("not")


def test_holm_turns_a_raw_hit_into_not_significant_in_a_family():
    a, b = [1.0, 2.0, 3.0], [3.5, 4.5, 5.5]     # t = -3.06, df = 4, p = 0.037
    alone = pc.compare([(a, b)], True, np.random.default_rng(0), 200)
    assert alone[0]["welch"].p < 0.05 and alone[0]["verdict"] == "significantly better"
    three = pc.compare([(a, b)] * 3, True, np.random.default_rng(0), 200)
    assert [r["p_holm"] for r in three] == pytest.approx(holm([alone[0]["welch"].p] * 3))
    assert all(r["verdict"] == "not significant (n = 3 seeds)" for r in three)
    higher = pc.compare([(a, b)], False, np.random.default_rng(0), 200)
    assert higher[0]["verdict"] == "significantly worse"       # direction flips


def test_claim_a_verdicts_and_holm_across_the_table():
    t = _trials({
        ("full", 0.0): _around(100, 5),
        ("random", 0.75): _around(101, 2),          # small, 2 seeds: not significant
        ("el2n", 0.9): _around(130, 5),             # large, 5 seeds: worse
        ("clustering_nearest", 0.9): _around(80, 5),  # large: better
        ("moso", 0.9): [95.0],                       # one seed: no test
        ("random", 0.5): _around(500, 5),           # below 0.75: not in (a)
    })
    c = pc.claim_a(t, "fd_effnet", circular={"clustering_nearest"}, n_boot=500)
    got = {(r["method"], r["ratio"]): r["verdict"] for r in c.rows}
    assert got == {("random", 0.75): "not significant (n = 2 vs 5 seeds)",
                   ("el2n", 0.9): "significantly worse", ("clustering_nearest", 0.9): "significantly better",
                   ("moso", 0.9): "no test: fewer than 2 values per group (n = 1 vs 5)"}
    raw = [r["welch"].p for r in c.rows]
    assert [r["p_holm"] for r in c.rows] == pytest.approx(holm(raw), nan_ok=True)
    el2n = next(r for r in c.rows if r["method"] == "el2n")["welch"]
    ref = stats.ttest_ind(_around(130, 5), _around(100, 5), equal_var=False)
    assert el2n.t == pytest.approx(ref.statistic) and el2n.df == pytest.approx(ref.df)
    assert "1 of 4 significantly worse, 1 significantly better, 1 not significant, 1 without" in c.headline
    assert "| clustering_nearest † | 0.90 |" in c.table and "† selected its subset" in c.table
    assert "| random | 0.50 |" not in c.table and "Holm over the 4 comparisons" in c.table
    assert "130.00 ± 1.58 [" in c.table                           # mean ± std [CI]
    with pytest.raises(pc.ClaimsError, match="no full-data rows"):
        pc.claim_a(t[t["method"] != "full"], "fd_effnet")


def test_claim_b_needs_every_comparison_at_a_ratio():
    t = _trials({
        ("full", 0.0): _around(100, 5),
        ("random", 0.75): _around(120, 5), ("moso", 0.75): _around(110, 5),
        ("clustering_nearest", 0.75): _around(90, 5), ("clustering_balanced", 0.75): _around(95, 5),
        ("random", 0.9): _around(120, 5), ("moso", 0.9): _around(100.5, 5),   # tie with clustering
        ("clustering_nearest", 0.9): _around(100, 5),
    })
    c = pc.claim_b(t, "fd_effnet", n_boot=500)
    assert {r["clustering"] for r in c.rows} == {"clustering_nearest"}    # best mean is picked
    got = {(r["ratio"], r["other"]): r["verdict"] for r in c.rows}
    assert got[(0.75, "random")] == got[(0.75, "moso")] == "significantly better"
    assert got[(0.9, "random")] == "significantly better"
    assert got[(0.9, "moso")] == "not significant (n = 5 seeds)"
    assert "at ratios: 0.75 (of 0.75, 0.90)" in c.headline and "†" not in c.table


def test_claim_c_balanced_vs_random():
    s = _trials({("full", 0.0): _around(0.85, 5, 0.01),
                 ("random", 0.5): _around(0.88, 5, 0.01), ("clustering_balanced", 0.5): _around(0.65, 5, 0.01),
                 ("random", 0.75): _around(0.84, 2, 0.1), ("clustering_balanced", 0.75): _around(0.65, 2, 0.1)},
                metric="cov_kl_uniform")
    c = pc.claim_c(s, n_boot=500)
    assert [r["verdict"] for r in c.rows] == ["significantly better", "not significant (n = 2 seeds)"]
    assert "at ratios: 0.50 (of 0.50, 0.75)" in c.headline and "full data 0.8500" in c.table

def test_render_every_claim_and_one_line_errors():
    """What the report stage's verdicts_markdown calls: (a), (b) per dataset, (c) from the
    skewed table; a claim the data cannot answer raises a one-line ClaimsError."""
    main = _trials({("full", 0.0): _around(100, 5), ("random", 0.9): _around(99, 5),
                    ("clustering_nearest", 0.9): _around(80, 5)})
    skew = _trials({("random", 0.5): _around(0.88, 3, 0.01),
                    ("clustering_balanced", 0.5): _around(0.65, 3, 0.01)}, metric="cov_kl_uniform")
    out = pc.render(main, "fd_effnet", skew, circular={"clustering_nearest"}, n_boot=300)
    assert "**(a) quality at ratios >= 0.75" in out and "**(b)" in out and "**(c)" in out
    assert "| clustering_nearest † | 0.90 |" in out
    assert pc.render(main, "fd_effnet", claims=("a",), n_boot=300).count("**(") == 1
    for kwargs, needle in [({"trials": main}, "metric is required"),
                           ({"trials": main, "metric": "fid"}, "no column fid"),
                           ({"trials": skew, "metric": "cov_kl_uniform"}, "no full-data rows"),
                           ({"skewed": main, "claims": ("c",)}, "no column cov_kl_uniform")]:
        with pytest.raises(pc.ClaimsError, match=needle) as e:
            pc.render(n_boot=100, **kwargs)
        assert "\n" not in str(e.value)


def test_trials_format_is_checked_and_written_by_the_report(tmp_path):
    from orchestrator.stages.report import write_trials

    results = [{"trial": {"dataset": "d", "method": m, "ratio": r, "seed": s, "name": "x"},
                "metrics": {"fd_effnet": 100.0 + s, "precision": float("nan") if s else 0.5}}
               for m, r in (("full", 0.0), ("random", 0.5)) for s in (1, 0)]
    t = read_trials(write_trials(results, tmp_path))
    assert list(t.columns) == ["dataset", "method", "ratio", "seed", "fd_effnet", "precision"]
    assert t["seed"].tolist() == [0, 1, 0, 1] and t["precision"].isna().tolist() == [False, True] * 2
    bad = [(t.drop(columns="seed"), "missing column(s) seed"),
           (t[["dataset", "method", "ratio", "seed"]], "no metric columns"),
           (pd.concat([t, t.iloc[:1]]), "duplicate trial d/full/0/seed 0"),
           (t.assign(ratio=1.0), "ratio must lie in [0, 1)"),
           (t.assign(fd_effnet="x"), "column fd_effnet"),
           (t.assign(seed=0.5), "seed must hold integers")]
    for df, needle in bad:
        with pytest.raises(TrialsError, match=r".*" + needle.replace("[", r"\[").replace(")", r"\)")
                           .replace("(", r"\(")):
            check_trials(df, "x.csv")
    with pytest.raises(TrialsError, match="cannot read"):
        read_trials(tmp_path / "none.csv")
