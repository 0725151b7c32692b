"""A finished sweep's own overhead: trial work against the trial slots it occupied.

Every trial's result record (``<cache>/trial/*.json``) holds the seconds its worker
spent training, sampling and evaluating (``timing``). The driver log holds the sweep's
wall time (``sweep done (Ns)``) and the concurrency (``N trial(s) at once``). The slot
time is ``wall x concurrency``; what the trial work does not fill is the sweep
machinery's overhead (Tune + Ray Train start-up and teardown, scheduling gaps, MLflow
is logged after the sweep and is not in it). No baseline run is needed: the work
seconds are measured inside the same trials.

    python -m benchmarks.sweep_overhead OUT_DIR LOG [LOG ...]

``OUT_DIR`` is the sweep's ``experiment.output_dir``; each LOG is a driver log of a
run of it. For a resumed sweep pass every run's log: their sweep wall times add up,
and every trial record counts (a trial cut by a crash re-does work that no record
shows, so the overhead of a resumed sweep is an upper bound).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys


def parse_log(path: str) -> dict:
    """Sweep wall seconds, concurrency and stage seconds from one driver log."""
    text = open(path, errors="replace").read()
    out: dict = {"stages": {}}
    m = re.search(r"sweep done \((\d+)s\)", text)
    out["sweep_s"] = float(m.group(1)) if m else None
    m = re.search(r"(\d+) trial\(s\) at once", text)
    out["concurrency"] = int(m.group(1)) if m else None
    for name, pat in (("encode", r"encode done \((\d+)s\)"), ("embed", r"embed done: .*\((\d+)s\)"),
                      ("proxy", r"proxy statistics done \((\d+)s\)"),
                      ("score+select", r"score\+select: .*\((\d+)s\)"),
                      ("total", r"total (\d+)s;")):
        found = re.findall(pat, text)
        if found:
            out["stages"][name] = sum(float(x) for x in found)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("logs", nargs="+")
    args = ap.parse_args(argv)
    files = glob.glob(os.path.join(args.out_dir, "cache", "trial", "*.json"))
    if not files:
        print(f"error: no trial records under {args.out_dir}/cache/trial", file=sys.stderr)
        return 2
    records = [json.load(open(f)) for f in files]
    logs = [parse_log(p) for p in args.logs]
    if any(lg["sweep_s"] is None or lg["concurrency"] is None for lg in logs):
        bad = [p for p, lg in zip(args.logs, logs) if lg["sweep_s"] is None or lg["concurrency"] is None]
        print(f"error: {bad[0]}: no 'sweep done' or 'trial(s) at once' line", file=sys.stderr)
        return 2
    slots = sum(lg["sweep_s"] * lg["concurrency"] for lg in logs)
    parts = {k: sum(r["timing"][k] for r in records) for k in ("train_s", "sample_s", "eval_s")}
    work = sum(parts.values())
    n = len(records)
    print(f"trials {n}; sweep wall {sum(lg['sweep_s'] for lg in logs):.0f} s at concurrency "
          f"{logs[0]['concurrency']}; slot time {slots:.0f} s")
    print("per trial: " + ", ".join(f"{k[:-2]} {v / n:.1f} s" for k, v in parts.items())
          + f"; work {work / n:.1f} s of a {slots / n:.1f} s slot")
    print(f"overhead (slot - work): {(slots - work) / n:.1f} s per trial = "
          f"{100 * (slots - work) / slots:.1f}% of the slot time")
    for i, lg in enumerate(logs):
        print(f"log {i}: stages " + ", ".join(f"{k} {v:.0f} s" for k, v in lg["stages"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
