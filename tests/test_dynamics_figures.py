"""The network-dynamics figures (issue 15) on synthetic runs that record ``record.dynamics``: they
draw without warnings, label every axis, keep legends visible and off the data, say in one line
what they need, are built by ``alignment figures`` for runs on disk (and skipped with that line
for runs without the recording); and the demo's summary of the dynamics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from alignment import demo
from alignment.analyses import combine
from alignment.figures import fig_gradient_noise, fig_representations, fig_spectra
from alignment.figures.build import RUN_FIGURES, build_figures
from tests.figure_checks import assert_legends_visible, assert_tidy
from tests.synthetic import synthetic_run, synthetic_runs, write_run

FIGURES = (fig_representations, fig_spectra, fig_gradient_noise)
RULES = ("bp", "fa", "dfa", "usf", "pfa", "pfa_o")


@pytest.fixture(scope="module")
def runs() -> xr.Dataset:
    return synthetic_runs(RULES, (0, 1), dynamics=True, samples=8)


@pytest.mark.parametrize("module", FIGURES, ids=lambda m: m.NAME)
def test_figure_draws_from_synthetic_runs_with_visible_legends(module, runs: xr.Dataset) -> None:
    data = module.figure_data(runs)
    assert data.attrs["caption"] and data.attrs["seeds"] == "2"
    fig = module.make_figure(data)
    assert_tidy(fig)
    assert_legends_visible(fig)
    legends = [t.get_text() for f in fig.subfigs for leg in f.legends for t in leg.get_texts()]
    assert legends, "no legend"
    assert RUN_FIGURES[module.NAME] is module  # registered for `alignment figures`


def test_representations_show_cka_to_bp_per_rule_and_effective_rank(runs: xr.Dataset) -> None:
    data = fig_representations.figure_data(runs)
    assert set(data.data_vars) == {"cka_to_bp", "effective_rank"}
    assert data["cka_to_bp"].dims == ("epoch", "layer", "rule", "seed")
    fig = fig_representations.make_figure(data)
    titles = [ax.get_title() for ax in fig.get_axes()]
    assert titles.count("BP") == 1  # effective rank only: CKA of BP to itself is not drawn
    assert titles.count("PFA") == 2
    bands = [c for ax in fig.get_axes() for c in ax.collections]
    assert bands, "no sd bands over seeds"
    without_bp = synthetic_runs(("fa", "pfa"), (0,), dynamics=True)
    data = fig_representations.figure_data(without_bp)
    assert "cka_to_bp" not in data and "no BP run" in data.attrs["caption"]
    fig_representations.make_figure(data)


def test_spectra_draw_pfa_target_and_alpha(runs: xr.Dataset) -> None:
    data = fig_spectra.figure_data(runs)
    assert np.isfinite(data["feedback_target_sv_end"].sel(rule="pfa")).any()
    assert np.isnan(data["feedback_target_sv_end"].sel(rule="fa")).all()
    assert np.isnan(data["alpha"].sel(layer="fc3")).all()  # 3 singular values: no fit
    first, last = data["alpha"].sel(layer="fc1").isel(epoch=[0, -1]).mean(["rule", "seed"])
    assert float(first) > float(last)  # the synthetic tails grow heavier
    fig = fig_spectra.make_figure(data)
    dotted = [ln for ax in fig.get_axes() for ln in ax.get_lines() if ln.get_linestyle() == ":"]
    assert dotted, "PFA's B·(BᵀW) is not drawn"


def test_gradient_noise_boxes_every_rule_at_the_last_probe_record(runs: xr.Dataset) -> None:
    data = fig_gradient_noise.figure_data(runs)
    final = data["final_sample_grad_angle"]
    assert final.dims == ("rule", "seed", "layer", "sample") and final.attrs["units"] == "deg"
    assert np.isfinite(final).all()
    assert data["grad_snr"].attrs["long_name"] == "gradient SNR"


def test_figures_say_what_they_need() -> None:
    plain = synthetic_runs(("bp", "pfa"), (0,))
    for module, variable in zip(FIGURES, ("activation", "weight_sv", "grad_snr"), strict=True):
        reason = module.supports(plain)
        assert reason and variable in reason and "record.dynamics" in reason
        with pytest.raises(ValueError, match=r"record\.dynamics"):
            module.figure_data(plain)
    written, skipped = build_figures(plain, "unused", only=[m.NAME for m in FIGURES])
    assert not written and set(skipped) == {m.NAME for m in FIGURES}


def test_alignment_figures_builds_them_from_runs_on_disk(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Records written the way the recorder writes them, opened lazily, through what
    ``alignment figures`` runs (only these three figures: the others have their own tests)."""
    from alignment.cli_figures import build_from_runs
    from alignment.figures._cli import find_runs

    for rule in ("bp", "pfa"):
        for seed in (0, 1):
            run = synthetic_run(rule, seed, dynamics=True, samples=6)
            write_run(run, tmp_path / "runs" / rule / f"seed{seed}", flushes=2)
    out = tmp_path / "figures"
    names = [m.NAME for m in FIGURES]
    build_from_runs(find_runs([tmp_path / "runs"]), out, ("png",), only=names)
    printed = capsys.readouterr().out
    for name in names:
        assert f"built   {name}" in printed
        assert (out / f"{name}.png").stat().st_size > 0
        with xr.open_dataset(out / f"{name}.nc") as saved:
            assert saved.attrs["caption"]
    plain = tmp_path / "plain" / "bp" / "seed0"
    write_run(synthetic_run("bp", 0), plain)
    build_from_runs([plain], out, ("png",), only=names)
    printed = capsys.readouterr().out
    assert "skipped fig_representations: needs activation: the runs did not record" in printed
    assert "skipped fig_gradient_noise: needs grad_snr or sample_grad_angle" in printed


def test_demo_summary_reports_cka_to_bp_and_gradient_snr() -> None:
    per_rule = {r: [synthetic_run(r, s, dynamics=True, samples=8) for s in (0, 1)] for r in RULES}
    lines = demo.dynamics_summary(per_rule)
    assert [ln.split(":")[0] for ln in lines] == [
        *(f"CKA to BP, {r}" for r in ("fa", "pfa", "pfa_o")),
        *(f"debiased CKA to BP, {r}" for r in ("fa", "pfa", "pfa_o")),
        *(f"gradient SNR, {r}" for r in RULES),
    ]
    cka = combine([ds for r in ("bp", "pfa") for ds in per_rule[r]])
    from alignment.analyses import cka_to_reference, last_finite

    final = last_finite(cka_to_reference(cka)["cka_to_bp"]).sel(rule="pfa", layer="fc1")
    mean, sd = float(final.mean()), float(final.std(ddof=1))
    assert f"fc1 {mean:.3f} ± {sd:.3f}" in lines[1]
    plain = {r: [synthetic_run(r, 0)] for r in ("bp", "fa")}
    assert demo.dynamics_summary(plain) == [
        "CKA to BP: not recorded (record.dynamics lacks representations)",
        "gradient SNR: not recorded (record.dynamics lacks gradient_noise)",
    ]
    no_bp = {r: per_rule[r] for r in ("fa", "pfa")}
    assert demo.dynamics_summary(no_bp)[0].startswith("CKA to BP: needs the BP runs")


def test_demo_configs_record_the_three_families() -> None:
    from alignment.config import load_config

    for rule in RULES:
        config = load_config(f"demo/{rule}")
        assert config.record.dynamics == ["representations", "spectra", "gradient_noise"]
