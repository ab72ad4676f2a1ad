"""Fig. 3: PFA's fixed point against the expansion ratio k (N_out = 100, N_in = 256, 100 draws).

Left: eigenvalues of B·Bᵀ (mean ± std over draws and eigenvalues; PFA-o dashed at 1; the
Marchenko–Pastur mean ± standard deviation 1 ± 1/√k dotted). Right: angle(W, B·Bᵀ·W) (mean ± std
over draws; PFA-o dashed at 0; the closed form with its finite-size term dotted). Log x-axis.
Needs no training::

    python -m alignment.figures.fig3_expansion --out out/figures [--draws 100]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from alignment.analyses.expansion import PAPER_K, expansion_study, expansion_summary
from alignment.figures import style
from alignment.figures._cli import parser

NAME = "fig3_expansion"
PFA, PFA_O = style.rule_color("pfa"), style.rule_color("pfa_o")


def figure_data(
    *, k: Sequence[float] | np.ndarray = PAPER_K, draws: int = 100, seed: int = 0
) -> xr.Dataset:
    """The Monte-Carlo study of :func:`alignment.analyses.expansion_study` (dense feedback), with
    attr ``caption``."""
    data = expansion_study(k=k, draws=draws, seed=seed)
    data.attrs["caption"] = caption(data)
    return data


def caption(data: xr.Dataset) -> str:
    """What the figure shows, from its Dataset."""
    return (
        f"PFA's fixed point R = BᵀW vs the expansion ratio k (N_out = {data.attrs['n_out']}, "
        f"N_in = {data.attrs['n_in']}, {data.attrs['draws']} random draws of B and W per k; "
        "arXiv 2405.20594, Fig. 3). Left: eigenvalues of B·Bᵀ, line = mean, band = ±1 standard "
        "deviation over draws and eigenvalues; dotted: Marchenko–Pastur 1 ± 1/√k; dashed: PFA-o "
        "(orthogonal B, exactly 1). Right: angle(W, B·Bᵀ·W), mean ± 1 standard deviation over "
        "draws; dotted: the closed form with its finite-size term; dashed: PFA-o (0°)."
    )


def _summary(ds: xr.Dataset) -> xr.Dataset:
    if "density" in ds.dims:
        ds = ds.sel(density=1.0) if 1.0 in ds["density"].values else ds.isel(density=0)
    return ds if "angle_mean" in ds else expansion_summary(ds)


def _log_k(ax: Axes, k: xr.DataArray) -> None:
    ax.set_xscale("log")
    ax.set_xlim(float(k.min()), float(k.max()))
    ticks = [t for t in (1, 10, 100) if k.min() <= t <= k.max()]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()


def panel_eigenvalues(ds: xr.Dataset, ax: Axes) -> Axes:
    """Eigenvalues of B·Bᵀ vs k: mean ± std (PFA), exactly 1 (PFA-o, dashed)."""
    s = _summary(ds)
    k = s["k"]
    style.band(ax, k, s["eigenvalues_mean"], s["eigenvalues_std"], color=PFA, label="PFA")
    ax.plot(k, np.full(k.size, float(s["pfa_o_eigenvalues_mean"])), "--", color=PFA_O)
    spread = np.sqrt(s["mp_variance"])
    for sign in (-1, 1):
        ax.plot(k, s["mp_mean"] + sign * spread, ":", color="k", linewidth=0.8)
    _log_k(ax, k)
    ax.set_ylim(bottom=min(0.0, float((s["mp_mean"] - spread).min())))
    style.label_axes(ax, x=k, y=s["eigenvalues_mean"])
    return ax


def panel_angle(ds: xr.Dataset, ax: Axes) -> Axes:
    """angle(W, B·Bᵀ·W) vs k: mean ± std (PFA), 0 (PFA-o, dashed), closed form (dotted)."""
    s = _summary(ds)
    k = s["k"]
    style.band(ax, k, s["angle_mean"], s["angle_std"], color=PFA, label="PFA")
    ax.plot(k, np.full(k.size, float(s["pfa_o_angle_mean"])), "--", color=PFA_O)
    ax.plot(k, s["expected_angle"], ":", color="k", linewidth=0.8)
    _log_k(ax, k)
    ax.set_ylim(-2.0, 90.0)
    ax.set_yticks([0, 30, 60, 90])
    style.label_axes(ax, x=k, y=s["angle_mean"])
    return ax


def make_figure(ds: xr.Dataset) -> Figure:
    """Fig. 3 from :func:`figure_data` (or its :func:`alignment.analyses.expansion_summary`)."""
    width, height = style.CELL["expansion"]
    with style.style():
        fig = style.new_figure(2 * width, height + 0.35)
        left, right = fig.subplots(1, 2)
        panel_eigenvalues(ds, left)
        panel_angle(ds, right)
        handles = [
            (Line2D([], [], color=PFA), Patch(color=PFA, alpha=0.3, linewidth=0)),
            Line2D([], [], color=PFA_O, linestyle="--"),
            Line2D([], [], color="k", linestyle=":", linewidth=0.8),
        ]
        fig.legend(
            handles,
            ["PFA (mean ± std)", "PFA-o", "theory"],
            loc="outside upper center",
            ncols=3,
            frameon=False,
        )
    return fig


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(NAME, __doc__, runs=False)
    p.add_argument("--draws", type=int, default=100, help="Monte-Carlo draws per k (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--k-points", type=int, default=11, help="k = logspace(0, 2, N) (default 11, as the paper)"
    )
    args = p.parse_args(argv)
    if args.draws < 1 or args.k_points < 2:
        p.error("--draws must be >= 1 and --k-points >= 2")
    data = figure_data(k=np.logspace(0, 2, args.k_points), draws=args.draws, seed=args.seed)
    for path in style.save(make_figure(data), data, args.out, args.stem, formats=args.format):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
