"""The README's "Your own model, your own loop": its example runs as written (a model not in
``alignment.models``, a plain loop, no trainer config), then ``alignment info`` and ``alignment
figures`` work on what it recorded, and the "Combining runs" snippet runs on those runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_block(name: str) -> str:
    """The fenced Python block between ``<!-- NAME: start -->`` and ``<!-- NAME: end -->``."""
    text = (ROOT / "README.md").read_text()
    match = re.search(
        rf"<!-- {name}: start -->\n```python\n(.*?)```\n<!-- {name}: end -->", text, re.S
    )
    assert match, f"README.md has no {name} block"
    return match.group(1)


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("own_model")
    (where / "example.py").write_text(readme_block("own-model-example"))
    result = run(["example.py"], where)
    assert result.returncode == 0, result.stderr
    return where


def test_the_example_records_four_finished_runs(recorded: Path) -> None:
    runs = sorted(p.parent.relative_to(recorded) for p in recorded.rglob("record.zarr"))
    assert [str(p) for p in runs] == [
        "runs/fa/seed0",
        "runs/fa/seed1",
        "runs/pfa/seed0",
        "runs/pfa/seed1",
    ]
    assert not list(recorded.rglob("config.yaml"))  # nothing from the trainer


def test_info_describes_the_runs(recorded: Path) -> None:
    result = run(["-m", "alignment", "info", "runs"], recorded)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.count("finished, last recorded step 126") == 4
    assert out.count("test accuracy: final ") == 4 and "recording: " in out
    assert "0 Conv2d 1→8 3×3" in out and "11 Linear 64→10" in out and "predicted (°)" in out


def test_figures_draw_from_the_runs(recorded: Path) -> None:
    result = run(["-m", "alignment", "figures", "runs", "--out", "figures"], recorded)
    assert result.returncode == 0, result.stderr
    drawn = {p.stem for p in (recorded / "figures").glob("*.png")}
    assert {"fig_grad_alignment", "fig_jacobian"} <= drawn, (drawn, result.stdout)


def test_the_combining_snippet_runs_on_them(recorded: Path) -> None:
    code = readme_block("combining-example") + "\nassert frame['rule'].nunique() == 2\n"
    (recorded / "combine.py").write_text(code)
    result = run(["combine.py"], recorded)
    assert result.returncode == 0, result.stderr
