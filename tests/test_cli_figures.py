"""``alignment figures`` and ``alignment reproduce`` end to end on tiny real runs, the figure
scripts' ``main(argv)``, and ``make_demo_figures``."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from alignment import cli
from alignment.cli_figures import add_commands
from alignment.figures import fig2_mnist, fig3_expansion
from alignment.figures.demo import make_demo_figures
from tests.synthetic import tiny_runs


def run_cli(argv: list[str]) -> int:
    """``alignment <argv>`` with the figure commands registered (as cli.main will do)."""
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "figures" not in sub.choices:
        add_commands(sub)
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_runs(tmp_path_factory)


def test_figures_command_builds_what_the_runs_support(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(["figures", str(root), "--out", str(tmp_path), "--format", "png,pdf"]) == 0
    out = capsys.readouterr().out
    for stem in ("fig2_mnist", "fig_grad_alignment", "fig_jacobian", "fig_decay"):
        assert f"built   {stem}" in out
        for suffix in (".png", ".pdf", ".nc", ".md"):
            assert (tmp_path / f"{stem}{suffix}").stat().st_size > 0
        assert not (tmp_path / f"{stem}.svg").exists()
    assert "skipped fig4_cifar10: the runs are on digits, not cifar10" in out
    assert "skipped fig_sparse" in out and "skipped fig3_expansion" in out


def test_figures_command_rejects_bad_formats(root: Path) -> None:
    with pytest.raises(SystemExit):
        run_cli(["figures", str(root), "--format", "bmp"])


def test_reproduce_expansion_needs_no_training(tmp_path: Path) -> None:
    code = run_cli(
        ["reproduce", "expansion", "--draws", "2", "--out", str(tmp_path), "--format", "svg"]
    )
    assert code == 0
    assert {p.name for p in (tmp_path / "figures").iterdir()} == {
        "fig3_expansion.svg",
        "fig3_expansion.nc",
        "fig3_expansion.md",
    }
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("experiment", ["cifar10", "imagenet", "all"])
def test_reproduce_without_data_root_stops_clearly(
    experiment: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(["reproduce", experiment, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--data-root" in err and "nothing was trained" in err
    assert not tmp_path.joinpath("runs").exists()


def test_figure_main_writes_every_format(root: Path, tmp_path: Path) -> None:
    assert fig2_mnist.main([str(root / "bp"), str(root / "pfa"), "--out", str(tmp_path)]) == 0
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".md", ".nc", ".pdf", ".png", ".svg"]
    assert fig2_mnist.main([str(tmp_path / "nothing"), "--out", str(tmp_path)]) == 2
    assert (
        fig3_expansion.main(
            ["--draws", "2", "--k-points", "3", "--out", str(tmp_path), "--stem", "f3"]
        )
        == 0
    )
    assert (tmp_path / "f3.pdf").exists()


def test_make_demo_figures(root: Path, tmp_path: Path) -> None:
    paths = make_demo_figures(root, tmp_path, draws=2, formats=("png",))
    names = {p.name for p in paths}
    assert {"fig2_mnist_demo.png", "fig3_expansion.png", "fig_decay_demo.png"} <= names
    assert {"fig_grad_alignment_demo.nc", "fig_jacobian_demo.png"} <= names
    assert all(p.exists() for p in paths)
    with pytest.raises(FileNotFoundError):
        make_demo_figures(tmp_path / "none", tmp_path)


@pytest.mark.slow
def test_reproduce_mnist_quick_trains_and_builds(tmp_path: Path) -> None:
    argv = ["reproduce", "mnist", "--quick", "--out", str(tmp_path), "--quiet", "--format", "png"]
    argv += ["--set", "epochs=1", "--set", "max_steps_per_epoch=2", "--set", "data.name=digits"]
    assert run_cli(argv) == 0
    assert len(list((tmp_path / "runs").glob("*/seed0/DONE"))) == 6
    assert (tmp_path / "figures" / "fig2_mnist.png").exists()
    assert (tmp_path / "figures" / "fig_decay_mnist.png").exists()
    assert run_cli(argv) == 0  # finished runs are skipped
