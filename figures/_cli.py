"""What every figure's ``main(argv)`` shares: finding runs, opening them, saving the outputs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import xarray as xr
from matplotlib.figure import Figure

from alignment.figures import style
from alignment.recording import open_runs
from alignment.summary import run_dirs


def find_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Run directories (holding a ``record.zarr`` from the Recorder, or a trainer's
    ``config.yaml``) given directly or found below each path
    (:func:`alignment.summary.run_dirs`)."""
    found: list[Path] = []
    for path in map(Path, paths):
        found.extend(run_dirs(path))
    return list(dict.fromkeys(found))


def parse_formats(text: str) -> tuple[str, ...]:
    formats = tuple(f.strip().lower().lstrip(".") for f in text.split(",") if f.strip())
    bad = [f for f in formats if f not in ("pdf", "png", "svg")]
    if bad or not formats:
        raise argparse.ArgumentTypeError(f"formats must be among pdf, png, svg; got {text!r}")
    return formats


def parser(name: str, description: str | None, *, runs: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m alignment.figures.{name}", description=description)
    if runs:
        p.add_argument("runs", nargs="+", help="run directories, or folders holding them")
    p.add_argument("--out", default="out/figures", help="output folder (default out/figures)")
    p.add_argument("--stem", default=name, help=f"file name without extension (default {name})")
    p.add_argument(
        "--format", type=parse_formats, default=style.FORMATS, help="comma-separated: pdf,png,svg"
    )
    return p


def run_figure(
    argv: Sequence[str] | None,
    *,
    name: str,
    description: str | None,
    figure_data: Callable[[xr.Dataset], xr.Dataset],
    make_figure: Callable[[xr.Dataset], Figure],
) -> int:
    """``main(argv)`` of a figure drawn from runs: open, analyse, draw, save; print the paths."""
    args = parser(name, description).parse_args(argv)
    try:
        ds = open_runs(find_runs(args.runs))
        data = figure_data(ds)
    except (FileNotFoundError, ValueError) as error:
        message = str(error).removeprefix(f"{name}: ")
        print(f"{name}: error: {message}", file=sys.stderr)
        return 2
    for path in style.save(make_figure(data), data, args.out, args.stem, formats=args.format):
        print(path)
    return 0
