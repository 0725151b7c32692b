"""eval.analysis.proxy_length: score agreement and verdicts side by side, on cases whose
answer is computed by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from eval.analysis.proxy_length import main, score_agreement, verdicts_side_by_side
from tests.page_helpers import regenerate

SEEDS = [0, 1, 2, 3, 4]
OFFSET = np.array([0.0, 3.0, -2.0, 5.0, 1.0])   # a per-seed offset shared by every method


def _subset(path, keys, scores=None) -> None:
    df = pd.DataFrame({"key": keys, "uri": keys, "label": 0})
    if scores is not None:
        df["score"] = scores
    df.to_parquet(path)


def test_score_agreement_by_hand(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    # the same 4 images, two swapped ranks: rho = 1 - 6 * 2 / (4 * 15) = 0.8
    _subset(a / "el2n_r50_s0.parquet", list("wxyz"), [1.0, 2.0, 3.0, 4.0])
    _subset(b / "el2n_r50_s0.parquet", list("wxyz"), [1.0, 3.0, 2.0, 4.0])
    # 3 of the short run's 4 kept images kept by the long run; random has no score
    _subset(a / "random_r75_s1.parquet", list("wxyz"))
    _subset(b / "random_r75_s1.parquet", list("wxyv"))
    _subset(a / "full_r0_s0.parquet", list("wxyz"))          # full data: not a selection
    _subset(b / "full_r0_s0.parquet", list("wxyz"))
    _subset(a / "grand_r50_s0.parquet", list("wxyz"), [1.0, 2.0, 3.0, 4.0])   # short only
    got = score_agreement(a, b)
    assert got[["method", "ratio", "seed", "n_kept"]].values.tolist() == [
        ["el2n", 0.5, 0, 4], ["random", 0.75, 1, 4]]
    assert got["rho"].iloc[0] == pytest.approx(0.8)
    assert np.isnan(got["rho"].iloc[1])
    assert got["kept_overlap"].tolist() == [1.0, 0.75]


def _trials(el2n_shift: float) -> pd.DataFrame:
    """full, random and el2n at ratio 0.5 over 5 seeds; el2n's fd is random's + shift."""
    rows = []
    noise = np.random.default_rng(0).normal(0, 0.2, size=(len(SEEDS), 3))
    for i, s in enumerate(SEEDS):
        for j, (m, r, shift) in enumerate((("full", 0.0, -5.0), ("random", 0.5, 0.0),
                                           ("el2n", 0.5, el2n_shift))):
            rows.append({"dataset": "d", "method": m, "ratio": r, "seed": s,
                         "fd_cls": 50 + OFFSET[i] + shift + noise[i, j],
                         "f_score_cls": 0.5 + OFFSET[i] / 100 - shift / 100 + noise[i, j] / 100})
    return pd.DataFrame(rows)


CONFIG = {"eval": {"embedders": ["classifier"], "primary": "classifier"},
          "pruning": {"methods": [{"name": "random"}, {"name": "el2n"}]},
          "analysis": {"high_ratio": 0.5}}


def test_verdicts_side_by_side_marks_the_row_that_changes():
    short, long = _trials(el2n_shift=10.0), _trials(el2n_shift=0.0)
    short = pd.concat([short, short.assign(seed=short["seed"] + 10)])   # seeds long lacks
    side = verdicts_side_by_side(short, long, CONFIG)
    row = side[(side["metric"] == "fd_cls") & (side["method"] == "el2n")
               & (side["against"] == "random")].iloc[0]
    # the paired effect by hand: mean over seeds 0-4 of el2n - random (seeds 10-14 dropped)
    s = short[short["seed"] < 10]
    by_hand = (s[s["method"] == "el2n"]["fd_cls"].to_numpy()
               - s[s["method"] == "random"]["fd_cls"].to_numpy()).mean()
    assert row["effect_short"] == pytest.approx(by_hand)
    assert row["verdict_short"] != row["verdict_long"] and row["changed"]
    same = side[(side["method"] == "random") & (side["against"] == "full")]
    assert len(same) and not same["changed"].any()      # random is the same in both runs


def test_cli_writes_the_page_and_refuses_missing_inputs(tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    _trials(10.0).to_csv(tmp_path / "short.csv", index=False)
    _trials(0.0).to_csv(tmp_path / "long.csv", index=False)
    pd.DataFrame([{"method": "el2n", "ratio": 0.5, "seed": 0, "n_kept": 4, "rho": 0.8,
                   "kept_overlap": 0.75}]).to_csv(tmp_path / "agree.csv", index=False)
    out = tmp_path / "page.md"
    assert main(["--short", str(tmp_path / "short.csv"), "--long", str(tmp_path / "long.csv"),
                 "--agreement", str(tmp_path / "agree.csv"), "--config", str(cfg),
                 "--out", str(out)]) == 0
    text = out.read_text()
    assert "| el2n | 1 | 0.800 [0.800, 0.800] | 0.75 |" in text
    assert "change with the proxy's length" in text
    assert main(["--out", str(out), "--short", str(tmp_path / "short.csv")]) == 2
    assert "error: --out needs --long, --agreement, --config" in capsys.readouterr().err


def test_proxy_length_page_is_the_one_generated_from_the_committed_csvs(tmp_path, monkeypatch):
    """docs/proxy_length.md is exactly what its own command line writes today."""
    committed, page = regenerate("docs/proxy_length.md", "eval.analysis.proxy_length", main,
                                 tmp_path, monkeypatch)
    assert "| el2n | 3 |" in page and "| random | 3 | no score | 1.00 | 1.00 | 1.00 |" in page
    assert page == committed
