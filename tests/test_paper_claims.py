"""benchmarks.paper_claims: verdicts from a comparison table, checked on hand-made tables."""

from __future__ import annotations

import math

import pandas as pd

from benchmarks import paper_claims as pc


def _table(rows) -> pd.DataFrame:
    cols = ["dataset", "method", "ratio", "fd_effnet_mean", "fd_effnet_std", "cov_kl_uniform_mean",
            "cov_kl_uniform_std", "n_seeds"]
    return pd.DataFrame([dict(zip(cols, r)) for r in rows])


def test_welch_t_matches_the_formula():
    t = _table([("d", "a", 0.5, 10.0, 2.0, 0, 0, 3), ("d", "b", 0.5, 7.0, 1.0, 0, 0, 2)])
    want = (10.0 - 7.0) / math.sqrt(4.0 / 3 + 1.0 / 2)
    assert math.isclose(pc.welch_t(t.iloc[0], t.iloc[1], "fd_effnet"), want)


def test_claims_a_and_b_verdicts():
    t = _table([
        ("d", "full", 0.0, 100.0, 2.0, 0, 0, 3),
        ("d", "random", 0.75, 101.0, 2.0, 0, 0, 3),        # within noise: holds
        ("d", "clustering_nearest", 0.75, 90.0, 1.0, 0, 0, 3),
        ("d", "random", 0.9, 130.0, 2.0, 0, 0, 3),         # clearly worse
        ("d", "clustering_nearest", 0.9, 128.0, 2.0, 0, 0, 3),
        ("d", "random", 0.5, 500.0, 1.0, 0, 0, 3),         # below HIGH: ignored by (a)
    ])
    text, ok = pc.claim_a(t, "fd_effnet")
    assert not ok and "| random | 0.90 |" in text and "| worse |" in text
    assert "| clustering_nearest | 0.75 |" in text and "better" in text and "0.50" not in text
    text, ok = pc.claim_b(t, "fd_effnet")
    assert not ok                                      # 0.9: 128 vs 130 is a tie
    assert "| 0.75 | clustering_nearest" in text and "clustering best" in text and "tie" in text


def test_claim_c_and_cli(tmp_path, capsys):
    skew = _table([
        ("s", "full", 0.0, 0, 0, 0.5, 0.01, 3),
        ("s", "random", 0.5, 0, 0, 0.5, 0.02, 3),
        ("s", "clustering_balanced", 0.5, 0, 0, 0.2, 0.02, 3),
    ])
    text, ok = pc.claim_c(skew)
    assert ok and "closer to uniform" in text
    main = _table([("d", "full", 0.0, 100.0, 2.0, 0, 0, 3), ("d", "random", 0.9, 99.0, 2.0, 0, 0, 3)])
    main.to_csv(tmp_path / "r.csv", index=False)
    skew.to_csv(tmp_path / "s.csv", index=False)
    assert pc.main([str(tmp_path / "r.csv"), "--skewed", str(tmp_path / "s.csv")]) == 0
    out = capsys.readouterr().out
    assert "(a) quality at ratios >= 0.75 vs full data: holds" in out and "(c)" in out
    assert pc.main([str(tmp_path / "missing.csv")]) == 2


def test_one_seed_decides_nothing():
    t = _table([("d", "full", 0.0, 100.0, None, 0, 0, 1), ("d", "random", 0.9, 50.0, None, 0, 0, 1),
                ("d", "clustering_nearest", 0.9, 40.0, None, 0, 0, 1)])
    assert math.isnan(pc.welch_t(t.iloc[1], t.iloc[0], "fd_effnet"))
    text, ok = pc.claim_a(t, "fd_effnet")
    assert not ok and "n/a (one seed)" in text
    assert pc.claim_b(t, "fd_effnet")[1] is False
