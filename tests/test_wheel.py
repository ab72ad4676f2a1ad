"""The built distribution: ``python -m build`` makes the sdist and, from it, the wheel (this is
where CI builds them); the wheel's one top-level package is ``alignment``; installed into a
fresh venv that already sees this environment's torch, it keeps that torch (pip downloads
nothing: ``--no-index``), and ``alignment --help`` and a convert + Recorder script run there."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
import torch

import alignment

ROOT = Path(__file__).resolve().parents[1]
OWN = re.compile(r"^(__editable__|feedback_alignment|alignment)|\.pth$")
"""Entries of site-packages that are this project's own install (or process .pth hooks)."""


def run(args: list, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """``args`` run to completion, failing the test with its output if it fails."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_"))}
    env |= {
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_NO_INPUT": "1",
        "PIP_CONFIG_FILE": os.devnull,
    }
    result = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, env=env, timeout=300, **kwargs
    )
    assert result.returncode == 0, f"{args}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sdist and the wheel built from it, once per session (no build isolation: the
    setuptools of requirements.lock, nothing downloaded)."""
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ROOT])
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return {"sdist": sdist, "wheel": wheel}


def test_the_wheels_only_top_level_package_is_alignment(dist: dict[str, Path]) -> None:
    with zipfile.ZipFile(dist["wheel"]) as wheel:
        names = wheel.namelist()
        (record,) = [n for n in names if n.endswith(".dist-info/RECORD")]
        recorded = [line.split(",")[0] for line in wheel.read(record).decode().splitlines()]
        (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(wheel.read(meta).decode())
    assert sorted(recorded) == sorted(names)
    assert {n.split("/")[0] for n in names if ".dist-info/" not in n} == {"alignment"}
    assert {"alignment/analyses/__init__.py", "alignment/figures/build.py"} <= set(names)
    assert {"alignment/configs/demo/pfa.yaml", "alignment/sweeps/specs/mnist.yaml"} <= set(names)
    assert (metadata["Name"], metadata["Version"]) == ("feedback-alignment", alignment.__version__)
    assert "torch>=2.1" in metadata.get_all("Requires-Dist")


def test_the_sdist_holds_analyses_and_figures_as_files(dist: dict[str, Path]) -> None:
    """Inside the package as plain files (not the repository's symlinks), so that the sdist
    builds the same wheel on any platform."""
    with tarfile.open(dist["sdist"]) as sdist:
        members = {m.name.split("/", 1)[1]: m for m in sdist.getmembers() if "/" in m.name}
    for name in ("alignment/analyses/__init__.py", "alignment/figures/build.py"):
        assert members[name].isfile(), name
    assert {"tests/conftest.py", "CHANGELOG.md", "requirements.lock"} <= set(members)


@pytest.fixture(scope="module")
def venv(dist: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv that sees this environment's packages (torch among them) through a .pth
    file, but not this project; the wheel installed into it by pip, offline."""
    root = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", "--without-pip", root / "env"])
    python = root / "env" / "bin" / "python"
    site = Path(
        run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
        ).stdout.strip()
    )
    ours = Path(sysconfig.get_paths()["purelib"])
    view = root / "site-view"  # this environment's site-packages less this project's install
    view.mkdir()
    for entry in ours.iterdir():
        if not OWN.search(entry.name):
            (view / entry.name).symlink_to(entry)
    (site / "shared.pth").write_text(f"{view}\n")
    installed = run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--no-index", dist["wheel"]]
    )
    assert re.findall(r"Successfully installed (.*)", installed.stdout) == [
        f"feedback-alignment-{alignment.__version__}"
    ], installed.stdout  # pip found every dependency installed, torch included
    return root / "env"


def test_the_installed_wheel_keeps_torch_and_runs(venv: Path, tmp_path: Path) -> None:
    python, site = venv / "bin" / "python", venv / "lib"
    script = f"""
import importlib.util, os, sys
import torch, torch.nn.functional as F
import alignment
from alignment.figures.build import RUN_FIGURES
from alignment.analyses import accuracy_table

assert alignment.__file__.startswith(sys.prefix), alignment.__file__  # the wheel, not a checkout
assert importlib.util.find_spec("figures") is None and importlib.util.find_spec("analyses") is None
here = (torch.__version__, os.path.realpath(torch.__file__))
assert here == ({torch.__version__!r}, {os.path.realpath(torch.__file__)!r}), here  # the same
model = alignment.convert(torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.Tanh(),
                                              torch.nn.Linear(6, 3)), "pfa", k=4)
opt = torch.optim.SGD(model.parameters(), lr=0.05)
x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
with alignment.Recorder(model, "run", optimizer=opt) as rec:
    for _ in range(3):
        rec.step(x, y)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(); loss.backward(); opt.step()
ds = alignment.open_run("run")
assert "feedback_alignment" in ds and ds.sizes["step"] >= 1, ds
print("ok", ds.sizes["step"])
"""
    assert run([python, "-c", script], cwd=tmp_path).stdout.startswith("ok")
    assert not list(site.glob("python*/site-packages/torch")), "torch was installed again"
    help_ = run([venv / "bin" / "alignment", "--help"], cwd=tmp_path).stdout
    assert "train" in help_ and "figures" in help_
