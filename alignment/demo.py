"""``make demo``: the demo configs (BP, FA, DFA, uSF, PFA, PFA-o) on the embedded MNIST-5k.

Each run goes to ``out/demo/<rule>/seed0``; finished runs are skipped, interrupted ones resumed.
The summary table and the checks of the paper's phenomena are printed at the end.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from alignment.config import load_config
from alignment.recording import open_run
from alignment.summary import summarize
from alignment.theory import expected_angle
from alignment.training import train
from analyses import decay_alignment
from figures.demo import make_demo_figures

DEMO_RULES = ("bp", "fa", "dfa", "usf", "pfa", "pfa_o")


def _final(da: xr.DataArray) -> np.ndarray:
    return da.dropna("step", how="all").isel(step=-1).values


def phenomena(runs: dict[str, xr.Dataset]) -> list[tuple[str, str, bool]]:
    """(claim, measured, holds) for each phenomenon of the paper the demo should show."""
    checks = []
    if "bp" in runs:
        acc = float(runs["bp"]["test_accuracy"].dropna("step").values[-1])
        checks.append(("BP test accuracy ≥ 90 %", f"{100 * acc:.1f} %", acc >= 0.90))
    if "pfa" in runs:
        hidden = _final(runs["pfa"]["feedback_alignment"])[:-1]
        target = expected_angle(10)
        checks.append(
            (
                f"PFA hidden-layer path alignment within ±3° of {target:.2f}° (k = 10)",
                ", ".join(f"{a:.1f}°" for a in hidden),
                bool(np.all(np.abs(hidden - target) <= 3.0)),
            )
        )
        decay = decay_alignment(runs["pfa"]).dropna("step", how="all")
        c = float(decay["predicted_decay"].isel(step=-1))
        rel = float(np.nanmax(np.abs(decay["relative_error"].isel(step=-1).values)))
        checks.append(
            (
                "PFA feedback_residual ‖R − BᵀW‖ decays by the predicted factor c_t",
                f"c_t = {c:.3e}, max relative deviation {rel:.1e}",
                rel < 1e-3,
            )
        )
    if "pfa_o" in runs:
        hidden = _final(runs["pfa_o"]["feedback_alignment"])[:-1]
        checks.append(
            (
                "PFA-o hidden-layer path alignment ≤ 12° (paper, MNIST)",
                ", ".join(f"{a:.1f}°" for a in hidden),
                bool(np.all(hidden <= 12.0)),
            )
        )
    if "fa" in runs:
        first = float(_final(runs["fa"]["feedback_alignment"])[0])
        checks.append(
            ("FA first-layer alignment stays near 90°", f"{first:.1f}°", abs(first - 90) < 10)
        )
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="out/demo")
    parser.add_argument("--rules", nargs="+", default=list(DEMO_RULES), choices=DEMO_RULES)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument(
        "--draws", type=int, default=20, help="Monte-Carlo draws per k for Fig. 3 (paper: 100)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    runs = {}
    for rule in args.rules:
        start = time.perf_counter()
        config = load_config(f"demo/{rule}", args.set)
        (result,) = train(config, Path(args.out) / rule, quiet=args.quiet)
        runs[rule] = open_run(result.run_dir)
        print(f"{rule}: {time.perf_counter() - start:.0f} s", flush=True)
    print()
    for rule, ds in runs.items():
        print(summarize(ds, title=f"== {rule}  ({Path(args.out) / rule})"))
    print("\nThe paper's phenomena on MNIST-5k (not full MNIST):")
    for claim, measured, holds in phenomena(runs):
        print(f"  [{'ok' if holds else 'NO'}] {claim}: {measured}")
    figures_dir = Path(args.out) / "figures"
    written = make_demo_figures(Path(args.out), figures_dir, draws=args.draws)
    print(f"\n{len(written)} figure files written to {figures_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
