"""The README's "Watching a run": its sink example and its Lightning example run as written, and
what they leave is a finished record with TensorBoard event files beside it."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import alignment
from tests.test_readme_own_model import readme_block, run

# Each example trains PFA on MNIST-5k in a subprocess: about 50 s of CPU time for the two on the
# 2-core machine, so they run with `make test-all`; tests/test_lightning.py and
# tests/test_recording_sinks.py test the same code in the default run.
pytestmark = pytest.mark.slow


def scalar_tags(log_dir: Path) -> list[str]:
    return EventAccumulator(str(log_dir)).Reload().Tags()["scalars"]


def test_the_sink_example_prints_each_record_and_writes_tensorboard(tmp_path: Path) -> None:
    (tmp_path / "example.py").write_text(readme_block("sink-example"))
    result = run(["example.py"], tmp_path)
    assert result.returncode == 0, result.stderr
    ds = alignment.open_run(tmp_path / "runs/watched")
    printed = re.findall(
        r"^step (\d+): loss [\d.]+, fc1 at [\d.]+° to its feedback$", result.stdout, re.M
    )
    assert [int(s) for s in printed] == list(ds.step.values) and len(printed) >= 10
    assert "alignment/feedback_alignment/fc1" in scalar_tags(tmp_path / "runs/watched/tensorboard")


def test_the_lightning_example_records_the_fit(tmp_path: Path) -> None:
    (tmp_path / "example.py").write_text(readme_block("lightning-example"))
    result = run(["example.py"], tmp_path)
    assert result.returncode == 0, result.stderr
    ds = alignment.open_run(tmp_path / "runs/lightning/pfa")
    assert ds.step.values[-1] == 63 and int(np.isfinite(ds.test_accuracy).sum()) == 1
    assert float(ds.test_accuracy[-1]) > 0.5
    tags = scalar_tags(tmp_path / "runs/lightning/pfa/tensorboard")
    assert {"alignment/test_accuracy", "alignment/feedback_alignment/fc2"} <= set(tags)
    info = run(["-m", "alignment", "info", "runs"], tmp_path)
    assert "finished, last recorded step 63" in info.stdout, info.stderr
