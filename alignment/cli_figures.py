"""``alignment figures`` and ``alignment reproduce``: from recorded runs (or from nothing) to the
paper's figures.

* ``alignment figures RUNS… --out DIR [--format pdf,png,svg]`` builds every figure the runs
  support (runs are grouped by data set and model; own-loop runs without ``config.yaml`` work)
  and says, in one line each, which it skipped and why. Each figure comes with its caption
  (``.md``, and attr ``caption`` of its ``.nc``).
* ``alignment reproduce {mnist,cifar10,imagenet,sparse,expansion,all}`` trains what the
  experiment needs with the bundled paper configs (finished runs are skipped, interrupted ones
  resumed) into ``OUT/runs/<config name>/seed<N>``, then builds its figures into
  ``OUT/figures``. ``--quick`` trains the demo configs on the embedded MNIST-5k instead of full
  MNIST (mnist, sparse); expansion needs no training; cifar10 and imagenet need ``--data-root``.

Heavy imports (matplotlib, the figure modules) happen inside the commands, so registering them
costs nothing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXPERIMENTS = ("mnist", "cifar10", "imagenet", "sparse", "expansion", "all")
MNIST_RULES = ("bp", "fa", "dfa", "usf", "pfa", "pfa_o")
IMAGENET_RULES = ("bp", "usf", "pfa", "pfa_o")
SPARSE_RULES = ("fa", "dfa", "usf", "pfa")
DENSITIES = (1, 0.5, 0.3, 0.17, 0.1, 0.05)
NEEDS_DATA = ("cifar10", "imagenet")
DYNAMICS_FIGURES = ("fig_representations", "fig_spectra", "fig_gradient_noise")
"""Drawn where the runs recorded ``record.dynamics``; skipped with a note where they did not."""
FIGURES_OF = {
    "mnist": ("fig2_mnist", "fig_grad_alignment", "fig_jacobian", "fig_decay", *DYNAMICS_FIGURES),
    "cifar10": (
        "fig4_cifar10",
        "fig_grad_alignment",
        "fig_jacobian",
        "fig_decay",
        *DYNAMICS_FIGURES,
    ),
    "imagenet": (
        "fig5_imagenet",
        "fig_grad_alignment",
        "fig_jacobian",
        "fig_decay",
        *DYNAMICS_FIGURES,
    ),
    "sparse": ("fig_sparse",),
}


def _formats(text: str) -> tuple[str, ...]:
    formats = tuple(f.strip().lower().lstrip(".") for f in text.split(",") if f.strip())
    bad = [f for f in formats if f not in ("pdf", "png", "svg")]
    if bad or not formats:
        raise argparse.ArgumentTypeError(f"--format takes pdf, png and/or svg, got {text!r}")
    return formats


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_commands(subparsers: Any) -> None:
    """Register ``figures`` and ``reproduce`` on the ``alignment`` command's subparsers."""
    figures = subparsers.add_parser(
        "figures", help="build every figure the given runs support (PDF, PNG, SVG + .nc)"
    )
    figures.add_argument("runs", nargs="+", help="run directories, or folders holding them")
    figures.add_argument(
        "--out", default="out/figures", help="output folder (default: out/figures)"
    )
    figures.add_argument(
        "--format", type=_formats, default=("pdf", "png", "svg"), help="e.g. pdf,png (default all)"
    )
    figures.set_defaults(func=_figures_command)

    reproduce = subparsers.add_parser(
        "reproduce", help="train a paper experiment with the bundled configs, then its figures"
    )
    reproduce.add_argument("experiment", choices=EXPERIMENTS)
    reproduce.add_argument(
        "--quick", action="store_true", help="MNIST-5k demo configs instead of full MNIST"
    )
    reproduce.add_argument("--seeds", type=_positive, help="train seeds 0..N-1 (default: config's)")
    reproduce.add_argument(
        "--data-root", help="folder with the data sets (MNIST/, cifar-10-batches-py/, imagenet/)"
    )
    reproduce.add_argument("--out", default="out/reproduce", help="default: out/reproduce")
    reproduce.add_argument(
        "--draws", type=_positive, default=100, help="Monte-Carlo draws per k for Fig. 3"
    )
    reproduce.add_argument(
        "--format", type=_formats, default=("pdf", "png", "svg"), help="e.g. pdf,png (default all)"
    )
    reproduce.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field of every config, e.g. --set epochs=2 (repeatable)",
    )
    reproduce.add_argument("--device", choices=["auto", "cpu", "cuda"])
    reproduce.add_argument("--quiet", action="store_true", help="no progress bars")
    reproduce.set_defaults(func=_reproduce_command)


# ------------------------------------------------------------------------------ figures
def _group_key(run: Path) -> str:
    """'<data set>_<model>' of a run: from its config.yaml (trainer runs), else from its
    record's attrs (a trainer config, or a tag ``data``/``model`` of an own-loop run)."""
    import json

    import yaml

    if (run / "config.yaml").exists():
        config = yaml.safe_load((run / "config.yaml").read_text()) or {}
        tags: dict = {}
    else:
        from alignment.recording import open_run

        attrs = open_run(run).attrs
        config = json.loads(attrs.get("config") or "{}")
        tags = json.loads(attrs.get("tags") or "{}")
    data, model = config.get("data"), config.get("model")
    data = data if isinstance(data, dict) else {"name": data} if isinstance(data, str) else {}
    model = model if isinstance(model, dict) else {"name": model} if isinstance(model, str) else {}
    data_name = data.get("name") or tags.get("data") or tags.get("dataset") or "data"
    return f"{data_name}_{model.get('name') or tags.get('model') or 'model'}"


def _group_runs(run_dirs: Sequence[Path]) -> dict[str, list[Path]]:
    """Runs grouped by '<data set>_<model>'; one figure set per group."""
    groups: dict[str, list[Path]] = {}
    for run in run_dirs:
        groups.setdefault(_group_key(run), []).append(run)
    return groups


def _report(written: dict[str, list[Path]], skipped: dict[str, str], group: str) -> None:
    for stem, paths in written.items():
        print(f"built   {stem}: {', '.join(str(p) for p in paths)}")
    for name, reason in skipped.items():
        print(f"skipped {name}{f' ({group})' if group else ''}: {reason}")


def build_from_runs(
    run_dirs: Sequence[Path],
    out: Path,
    formats: Sequence[str],
    *,
    only: Sequence[str] | None = None,
    suffix: str = "",
) -> dict[str, list[Path]]:
    """Open the runs lazily (grouped by data set and model; :func:`alignment.open_runs`: each
    figure reads and reduces only what it draws), build the figures, print what was built and
    what skipped. Returns the files written per figure."""
    from alignment.figures.build import NO_RUNS, build_figures
    from alignment.recording import open_runs

    groups = _group_runs(run_dirs)
    built: dict[str, list[Path]] = {}
    for key, runs in groups.items():
        tag = suffix if len(groups) == 1 else f"{suffix}_{key}"
        written, skipped = build_figures(
            open_runs(runs), out, formats=formats, suffix=tag, only=only
        )
        _report(written, skipped, key if len(groups) > 1 else "")
        built |= written
    if only is None:
        for name, reason in NO_RUNS.items():
            print(f"skipped {name}: {reason}")
    return built


def _figures_command(args: argparse.Namespace) -> int:
    from alignment.figures._cli import find_runs

    run_dirs = find_runs(args.runs)  # record.zarr (any Recorder run) or config.yaml
    built = build_from_runs(run_dirs, Path(args.out), args.format)
    return 0 if built else 1


# ------------------------------------------------------------------------------ reproduce
def _config_names(experiment: str, quick: bool) -> list[tuple[str, list[str]]]:
    """(bundled config name, extra overrides) of every run the experiment needs."""
    if experiment == "mnist":
        return [(f"demo/{r}" if quick else f"paper/mnist_{r}", []) for r in MNIST_RULES]
    if experiment == "cifar10":
        return [(f"paper/cifar10_{r}", []) for r in MNIST_RULES]
    if experiment == "imagenet":
        return [(f"paper/imagenet_{r}", []) for r in IMAGENET_RULES]
    if experiment == "sparse":
        bp = [("demo/bp" if quick else "paper/mnist_bp", [])]
        if not quick:
            return bp + [(f"paper/sparse/{r}_{d:g}", []) for r in SPARSE_RULES for d in DENSITIES]
        return bp + [
            (f"demo/{r}", [] if d == 1 else [f"rule.density={d:g}", f"name=demo_{r}_density{d:g}"])
            for r in SPARSE_RULES
            for d in DENSITIES
        ]
    return []


def _data_root(experiment: str, data_root: str | None) -> list[str]:
    if data_root is None:
        return []
    root = Path(data_root)
    if experiment == "imagenet" and (root / "imagenet").is_dir():
        root = root / "imagenet"
    return [f"data.root={root}"]


def _train_experiment(experiment: str, args: argparse.Namespace) -> list[Path]:
    from alignment.config import load_config
    from alignment.training import train

    runs: list[Path] = []
    for name, extra in _config_names(experiment, args.quick):
        overrides = [*_data_root(experiment, args.data_root), *extra, *args.set]
        config = load_config(name, overrides)
        seeds = list(range(args.seeds)) if args.seeds else None
        out = Path(args.out) / "runs" / config.name
        print(f"== {experiment}: {name} -> {out}", flush=True)
        results = train(config, out, seeds=seeds, device=args.device, quiet=args.quiet)
        runs.extend(result.run_dir for result in results)
    return runs


def _expansion(args: argparse.Namespace, out: Path) -> list[Path]:
    from alignment.figures import fig3_expansion, style

    data = fig3_expansion.figure_data(draws=args.draws)
    paths = style.save(
        fig3_expansion.make_figure(data), data, out, "fig3_expansion", formats=args.format
    )
    print(f"built   fig3_expansion: {', '.join(str(p) for p in paths)}")
    return paths


def _reproduce_command(args: argparse.Namespace) -> int:
    experiments = (
        ["expansion", "mnist", "sparse", "cifar10", "imagenet"]
        if args.experiment == "all"
        else [args.experiment]
    )
    missing = [e for e in experiments if e in NEEDS_DATA]
    if missing and args.data_root is None:
        print(
            f"alignment reproduce: error: {args.experiment} needs {' and '.join(missing)}, which "
            "must be on disk: pass --data-root DIR (DIR/cifar-10-batches-py for CIFAR-10, "
            "DIR/imagenet/{train,val}/<class>/ for ImageNet); nothing was trained. "
            "mnist, sparse and expansion run without it.",
            file=sys.stderr,
        )
        return 2
    out = Path(args.out) / "figures"
    for experiment in experiments:
        if experiment == "expansion":
            _expansion(args, out)
            continue
        runs = _train_experiment(experiment, args)
        suffix = "" if experiment == "sparse" else f"_{experiment}"
        build_from_runs(runs, out, args.format, only=FIGURES_OF[experiment], suffix=suffix)
    return 0
