"""The GPU benchmark script's ``--smoke`` mode (tiny sizes, CPU): the script runs end to end."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import gpu_throughput


def smoke(tmp_path: Path, *args: str) -> list[dict]:
    out = tmp_path / "gpu.json"
    assert gpu_throughput.main(["--smoke", *args, "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    for row in rows:
        assert math.isfinite(row["step_ms"]) and row["step_ms"] > 0 and row["images_per_s"] > 0
        assert row["ratio"] == 1.0 if row["rule"] == "plain" else math.isfinite(row["ratio"])
    return rows


def test_gpu_throughput_smoke(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rows = smoke(tmp_path, "--rules", "pfa", "--modes", "eager")
    assert [(r["net"], r["mode"], r["rule"]) for r in rows] == [
        ("resnet20", "eager", "plain"),
        ("resnet20", "eager", "pfa"),
        ("resnet18", "eager", "plain"),
        ("resnet18", "eager", "pfa"),
    ]
    assert "×plain" in capsys.readouterr().out


@pytest.mark.slow
def test_gpu_throughput_smoke_every_rule_eager_and_compiled(tmp_path: Path) -> None:
    rows = smoke(tmp_path)
    assert len(rows) == 2 * 2 * (1 + len(gpu_throughput.alignment.RULES))
