"""Regenerate the verdict tables in README.md and benchmarks/RESULTS.md from committed CSVs.

``python -m benchmarks.paper_claims --update-docs`` calls :func:`update_docs`. The
manifest ``benchmarks/results/verdicts.yaml`` names each table::

    docs: [README.md, benchmarks/RESULTS.md]    # documents scanned (paths from the root)
    seed: 0                                     # bootstrap seed (optional, default 0)
    n_boot: 10000                               # bootstrap resamples (optional)
    tables:
      reproduce:                                # marker name
        trials: reproduce_<hash>_<date>.trials.csv    # relative to the manifest's folder
        claims: [a, b]                          # a, b, c, d; trend: (d)'s slope against the ratio
        metric: fd_effnet                       # required for (a), (b), (d), trend
        balance_metric: cov_kl_uniform_cls      # optional, the column of (c)
        higher_is_better: false                 # optional
        circular: [clustering_nearest, clustering_balanced]   # optional, marked † in every claim
        docs: [benchmarks/RESULTS.md]           # optional subset of the documents

Each table is rendered once and written between ``<!-- verdicts:NAME:begin -->`` and
``<!-- verdicts:NAME:end -->`` in each of its documents, so they cannot disagree. A
missing document, marker or CSV, a marker without a table, or an unknown key is a
one-line :class:`~eval.verdicts.ClaimsError`; nothing is written then.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

from eval.trend import render_trend
from eval.trials import read_trials
from eval.verdicts import BALANCE_METRIC, ClaimsError, _need, render

REPO = Path(__file__).resolve().parents[1]
MANIFEST = "benchmarks/results/verdicts.yaml"
DEFAULT_DOCS = ["README.md", "benchmarks/RESULTS.md"]
MARKER = re.compile(r"<!-- verdicts:([A-Za-z0-9_.-]+):(begin|end) -->")
TOP_KEYS = {"docs", "seed", "n_boot", "tables"}
TABLE_KEYS = {"trials", "claims", "metric", "balance_metric", "higher_is_better", "circular", "docs"}
CLAIMS = {"a", "b", "c", "d", "trend"}


def begin_marker(name: str) -> str:
    """The comment that opens table ``name`` in a document."""
    return f"<!-- verdicts:{name}:begin -->"


def end_marker(name: str) -> str:
    """The comment that closes table ``name`` in a document."""
    return f"<!-- verdicts:{name}:end -->"


def _list(value: object, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ClaimsError(f"{where}: expected a list of strings, got {value!r}")
    return value


def load_manifest(path: Path) -> dict:
    """Read and check the manifest; returns {docs, seed, n_boot, tables}."""
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ClaimsError(f"{path}: cannot read manifest ({type(e).__name__})") from None
    if not isinstance(raw, dict):
        raise ClaimsError(f"{path}: expected a mapping with keys {sorted(TOP_KEYS)}")
    if set(raw) - TOP_KEYS:
        raise ClaimsError(f"{path}: unknown key(s) {sorted(set(raw) - TOP_KEYS)}")
    tables = raw.get("tables") or {}
    if not isinstance(tables, dict):
        raise ClaimsError(f"{path}: tables must be a mapping of name -> table")
    docs = _list(raw.get("docs", DEFAULT_DOCS), f"{path}: docs")
    for name, t in tables.items():
        where = f"{path}: tables.{name}"
        if not MARKER.fullmatch(begin_marker(str(name))):
            raise ClaimsError(f"{where}: a name may hold letters, digits, _ . - only")
        if not isinstance(t, dict) or set(t) - TABLE_KEYS:
            raise ClaimsError(f"{where}: unknown key(s) "
                              f"{sorted(set(t) - TABLE_KEYS) if isinstance(t, dict) else t!r}")
        if "trials" not in t:
            raise ClaimsError(f"{where}.trials: missing")
        claims = _list(t.get("claims"), f"{where}.claims")
        if not claims or set(claims) - CLAIMS:
            raise ClaimsError(f"{where}.claims: a non-empty list of a, b, c, d, trend, "
                              f"got {claims!r}")
        if {"a", "b", "d", "trend"} & set(claims) and not t.get("metric"):
            raise ClaimsError(f"{where}.metric: required for claims (a), (b), (d) and trend")
        _list(t.get("circular"), f"{where}.circular")
        _list(t.get("docs"), f"{where}.docs")
    return {"docs": docs, "seed": int(raw.get("seed", 0)), "n_boot": int(raw.get("n_boot", 10_000)),
            "tables": tables}


def render_entry(name: str, t: dict, base: Path, seed: int, n_boot: int) -> str:
    """The Markdown of one manifest table (its CSV read from ``base``)."""
    csv = base / t["trials"]
    if not csv.is_file():
        raise ClaimsError(f"tables.{name}.trials: no such file {csv}")
    df = read_trials(csv)
    claims, circular = t["claims"], set(t.get("circular") or ())
    text = render(df if {"a", "b", "d"} & set(claims) else None, t.get("metric"),
                  df if "c" in claims else None, claims=claims, circular=circular,
                  lower_is_better=not t.get("higher_is_better", False), seed=seed, n_boot=n_boot,
                  source=str(csv), skewed_source=str(csv), skewed_circular=circular,
                  balance_metric=t.get("balance_metric", BALANCE_METRIC))
    if "trend" in claims:
        _need(df, t["metric"], str(csv))
        text = "\n".join(filter(None, [text, render_trend(df, t["metric"], circular)]))
    return text


def _replace(text: str, doc: str, name: str, body: str) -> str:
    b, e = begin_marker(name), end_marker(name)
    if text.count(b) != 1 or text.count(e) != 1:
        raise ClaimsError(f"{doc}: needs exactly one {b} and one {e} (found {text.count(b)}, {text.count(e)})")
    i, j = text.index(b) + len(b), text.index(e)
    if j < i:
        raise ClaimsError(f"{doc}: {e} comes before {b}")
    return text[:i] + "\n" + body.strip() + "\n" + text[j:]


def update_docs(manifest: str | os.PathLike | None = None, root: str | os.PathLike | None = None) -> list[str]:
    """Rewrite every verdict table of the manifest in its documents.

    Args:
        manifest: the manifest YAML (default ``<root>/benchmarks/results/verdicts.yaml``).
        root: folder the document paths are relative to (default: this checkout).

    Returns:
        One line per document: ``updated PATH`` or ``unchanged PATH``.

    Raises:
        ClaimsError: a missing manifest, document, marker or CSV, a marker without a
            table, or a malformed manifest (nothing is written then).
    """
    root = Path(root) if root else REPO
    path = Path(manifest) if manifest else root / MANIFEST
    if not path.is_file():
        raise ClaimsError(f"{path}: no such manifest")
    m = load_manifest(path)
    bodies = {name: render_entry(name, t, path.parent, m["seed"], m["n_boot"])
              for name, t in m["tables"].items()}
    wanted: dict[str, list[str]] = {d: [] for d in m["docs"]}
    for name, t in m["tables"].items():
        for doc in t.get("docs") or m["docs"]:
            wanted.setdefault(doc, []).append(name)
    new: dict[str, tuple[str, str]] = {}
    for doc, names in wanted.items():
        p = root / doc
        if not p.is_file():
            raise ClaimsError(f"{doc}: no such document under {root}")
        old = text = p.read_text()
        for found in dict.fromkeys(n for n, _ in MARKER.findall(text)):
            if found not in m["tables"]:
                raise ClaimsError(f"{doc}: marker verdicts:{found} has no table in {path.name}")
            if found not in names:
                raise ClaimsError(f"{doc}: marker verdicts:{found} but tables.{found}.docs omits {doc}")
        for name in names:
            text = _replace(text, doc, name, bodies[name])
        new[doc] = (old, text)
    lines = []
    for doc, (old, text) in new.items():
        if text != old:
            (root / doc).write_text(text)
        lines.append(f"{'updated' if text != old else 'unchanged'} {doc}")
    return lines
