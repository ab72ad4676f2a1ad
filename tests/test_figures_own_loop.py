"""Every figure on records of a user's own loop (a small convnet that is not in
``alignment.models``, converted to BP, DFA and PFA, trained with the Recorder, 2 seeds, no
config.yaml): it draws, tidy and with visible legends, or says in one line why it cannot; the
``alignment figures`` command finds such runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import xarray as xr

from alignment.figures import fig_decay
from alignment.figures.build import RUN_FIGURES
from alignment.recording import open_runs
from tests.figure_checks import assert_legends_visible, assert_tidy
from tests.own_loop import own_loop_runs
from tests.test_cli_figures import run_cli

RULES = ("bp", "dfa", "pfa")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("own_loop")
    own_loop_runs(root, RULES, (0, 1))
    return root


@pytest.fixture(scope="module")
def runs(root: Path) -> xr.Dataset:
    return open_runs(sorted(root.glob("*/seed*")))


def test_own_loop_runs_have_no_config_yaml(root: Path, runs: xr.Dataset) -> None:
    assert not list(root.rglob("config.yaml"))
    assert runs.sizes["run"] == 6 and runs.attrs["config"] == "{}"


@pytest.mark.parametrize("name", list(RUN_FIGURES))
def test_every_figure_draws_or_says_why_not_in_one_line(name: str, runs: xr.Dataset) -> None:
    module = RUN_FIGURES[name]
    reason = module.supports(runs)
    if reason is None:
        data = module.figure_data(runs)
        assert data.attrs["caption"] and "2 seed(s)" in data.attrs["caption"]
        fig = module.make_figure(data)
        assert_tidy(fig)
        assert_legends_visible(fig)
        return
    assert "\n" not in reason and len(reason) < 250, reason
    expected = {
        "fig2_mnist": "do not name their data set",
        "fig4_cifar10": "do not name their data set",
        "fig5_imagenet": "do not name their data set",
        "fig_sparse": "do not differ in feedback density",
        "fig_decay": "feedback_residual_predicted",
        **dict.fromkeys(("fig_representations", "fig_spectra", "fig_gradient_noise"), "dynamics"),
    }
    assert expected[name] in reason, reason


def test_figures_command_on_own_loop_runs(
    root: Path, runs: xr.Dataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(["figures", str(root), "--out", str(tmp_path), "--format", "png"]) == 0
    out = capsys.readouterr().out
    for stem in ("fig_training", "fig_grad_alignment", "fig_jacobian"):
        assert f"built   {stem}" in out
        assert (tmp_path / f"{stem}.png").stat().st_size > 0
        assert (tmp_path / f"{stem}.md").read_text().startswith(f"**{stem}**")
    skipped = [line for line in out.splitlines() if line.startswith("skipped")]
    assert any(line.startswith("skipped fig2_mnist: the runs do not name") for line in skipped)
    decay_recorded = "feedback_residual_predicted" in runs
    assert ("built   fig_decay" in out) == decay_recorded, out
    if not decay_recorded:
        assert "nor a trainer config" in str(fig_decay.supports(runs))
    with xr.open_dataset(tmp_path / "fig_training.nc") as data:
        assert data.attrs["x"] == "step"  # no epochs: a step axis
        assert data.attrs["accuracy"] == "test_accuracy"  # logged with rec.log
        assert list(data["layer_type"].values) == ["Conv2d", "Conv2d", "Linear", "Linear"]
