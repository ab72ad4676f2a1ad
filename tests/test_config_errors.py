"""Bad configs end in one line ``alignment: error: …`` (exit code 2) that names the file or the
key and the fix, before anything is written: base loops and bad bases, folders and non-UTF-8
files, out-of-range values, models that do not take the dataset's images, feedback too big for
memory."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
import torch
import yaml

from alignment.cli import main
from alignment.config import ConfigError, bundled_configs, load_config
from alignment.rules import RULES
from alignment.sweeps.spec import load_spec
from alignment.training import preflight as preflight_module
from alignment.training.preflight import (
    available_memory,
    meta_model,
    preflight,
    training_bytes,
)

# A config that trains in about a second (digits: embedded, 8×8 images).
TINY = {
    "name": "tiny",
    "model": {"name": "mlp"},
    "rule": {"name": "pfa", "k": 2},
    "data": {"name": "digits", "batch_size": 32, "eval_batch_size": 500},
    "epochs": 1,
    "max_steps_per_epoch": 2,
    "record": {"every": 1, "probe_size": 4},
}
# What alignment.data.load_dataset gives for each dataset: (input shape, number of classes).
SHAPES = {
    "mnist5k": ((1, 28, 28), 10),
    "digits": ((1, 8, 8), 10),
    "mnist": ((1, 28, 28), 10),
    "fashion_mnist": ((1, 28, 28), 10),
    "cifar10": ((3, 32, 32), 10),
    "imagenet": ((3, 224, 224), 1000),
}


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def tiny_config(tmp_path: Path) -> Path:
    return write(tmp_path / "tiny.yaml", yaml.safe_dump(TINY))


def cli_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run the CLI, expect exit code 2 and one line `alignment: error: …`; that line."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("alignment: error: "), err
    return lines[0]


def no_run_written(out: Path) -> bool:
    return not list(out.rglob("config.yaml")) and not list(out.rglob("record.zarr"))


# -- files: base loops, bad bases, folders, encodings ------------------------------------------


def test_a_base_loop_through_dotdot_paths_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the path grows by '../a' at each step and never repeats as text, only when resolved
    own = write(tmp_path / "a" / "x.yaml", "base: ../a/x\n")
    line = cli_error(capsys, ["train", str(own), "--out", str(tmp_path / "out")])
    assert f"{own}: base '../a/x' makes a loop" in line and "remove one base: line" in line
    # a loop over two files
    write(tmp_path / "b" / "one.yaml", "base: ../c/../b/two\n")
    two = write(tmp_path / "b" / "two.yaml", "base: ./one\n")
    line = cli_error(capsys, ["train", str(two), "--out", str(tmp_path / "out")])
    assert "makes a loop" in line and str((tmp_path / "b" / "one.yaml").resolve()) in line
    assert no_run_written(tmp_path / "out")


@pytest.mark.parametrize("base", ["5", "[a]", "{x: 1}", "''", "true"])
def test_base_must_be_one_file_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], base: str
) -> None:
    path = write(tmp_path / "exp.yaml", f"base: {base}\nepochs: 1\n")
    line = cli_error(capsys, ["train", str(path), "--out", str(tmp_path / "out")])
    assert f"{path}: base must be the name of one config file (a string" in line


def test_a_missing_base_names_the_file_it_looked_for(tmp_path: Path) -> None:
    path = write(tmp_path / "exp.yaml", "base: sub/nothing\n")
    with pytest.raises(ConfigError, match=r"base 'sub/nothing' not found: expected the file .*"):
        load_config(path)
    with pytest.raises(ConfigError, match=str(tmp_path / "sub" / "nothing.yaml")):
        load_config(path)


def test_a_folder_is_not_a_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "configs"
    folder.mkdir()
    line = cli_error(capsys, ["train", str(folder), "--out", str(tmp_path / "out")])
    assert f"config {str(folder)!r} is a folder, not a config file" in line
    # a base that is a folder
    (tmp_path / "base.yaml").mkdir()
    path = write(tmp_path / "exp.yaml", "base: base\n")
    line = cli_error(capsys, ["train", str(path), "--out", str(tmp_path / "out")])
    assert f"{tmp_path / 'base.yaml'}: is a folder, not a config file" in line


def test_a_config_that_is_not_utf8_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path / "exp.yaml", b"name: caf\xe9\n")  # Latin-1
    line = cli_error(capsys, ["train", str(path), "--out", str(tmp_path / "out")])
    assert f"{path}: not a UTF-8 text file (byte 0xe9 at offset 9)" in line
    assert "saved as UTF-8" in line


def test_sweep_specs_get_the_same_file_checks(tmp_path: Path) -> None:
    folder = tmp_path / "specs"
    folder.mkdir()
    with pytest.raises(ConfigError, match="is a folder"):
        load_spec(folder)
    latin1 = write(tmp_path / "spec.yaml", b"config: demo/pfa\nname: caf\xe9\n")
    with pytest.raises(ConfigError, match=rf"{latin1}: not a UTF-8 text file"):
        load_spec(latin1)


def test_a_sweep_over_a_config_with_a_base_loop_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path / "a" / "x.yaml", "base: ../a/x\n")
    spec = write(tmp_path / "spec.yaml", "config: a/x\naxes: {seed: [0]}\n")
    line = cli_error(capsys, ["sweep", "--dry-run", str(spec), "--out", str(tmp_path / "out")])
    assert "base '../a/x' makes a loop" in line


# -- values --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override,message",
    [
        ("name=../../escape_dir", r"name='../../escape_dir' is invalid: it names the run's folder"),
        ("name=/tmp/abs", r"name='/tmp/abs' is invalid"),
        ("name=a//b", r"name='a//b' is invalid"),
        ("name=.hidden", r"name='.hidden' is invalid"),
        ("max_steps_per_epoch=0", r"max_steps_per_epoch must be ≥ 1 \(or null for whole epochs\)"),
        ("record.jacobian=0", r"record\.jacobian must be 'epoch', 'never' or a step interval ≥ 1"),
        ("record.jacobian=-3", r"record\.jacobian must be .* got -3"),
        ("wd_schedule.burst_steps=-5", r"wd_schedule\.burst_steps must be ≥ 0 .* got -5"),
        ("lr_schedule.milestones=[3,-1]", r"lr_schedule\.milestones must be epochs ≥ 0, got -1"),
        ("optim.lr=.nan", r"optim\.lr must be a finite number, got nan"),
        ("optim.weight_decay=.inf", r"optim\.weight_decay must be a finite number, got inf"),
        ("rule.density=.nan", r"rule\.density must be a finite number, got nan"),
        ("optim.betas=[0.9,.nan]", r"optim\.betas\[1\] must be a finite number, got nan"),
        ("optim.betas=[0.9]", r"optim\.betas must be a pair of numbers in \[0, 1\)"),
        ("optim.betas=[0.9,1.0]", r"optim\.betas must be a pair .* got \[0\.9, 1\.0\]"),
        ("optim.betas=[-0.1,0.9]", r"optim\.betas must be a pair"),
    ],
)
def test_out_of_range_values_are_refused_at_load_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], override: str, message: str
) -> None:
    path = tiny_config(tmp_path)
    out = tmp_path / "out"
    args = ["train", str(path), "--out", str(out), "--set", "optim.name=adam", "--set", override]
    line = cli_error(capsys, args)
    assert str(path) in line
    assert re.search(message, line), line
    assert no_run_written(out) and not (tmp_path / "escape_dir").exists()


def test_the_default_output_folder_stays_under_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --out a run goes to out/<name>: '../' in the name would leave it."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    path = write(work / "exp.yaml", yaml.safe_dump({**TINY, "name": "../../escape_dir"}))
    cli_error(capsys, ["train", str(path)])
    assert not (tmp_path / "escape_dir").exists() and not (work / "out").exists()


def test_valid_edge_values_still_load(tmp_path: Path) -> None:
    path = tiny_config(tmp_path)
    config = load_config(
        path,
        [
            "name=group/sub-run_1.5",
            "record.jacobian=1",
            "wd_schedule.burst_steps=0",
            "lr_schedule.milestones=[0,2]",
            "optim.betas=[0,0.5]",
            "max_steps_per_epoch=null",
        ],
    )
    assert config.name == "group/sub-run_1.5" and config.optim.betas == [0, 0.5]


# -- the dataset's images and the memory: checked before the model is built --------------------


def test_a_model_that_does_not_take_the_images_is_one_line_naming_the_choices(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tiny_config(tmp_path)
    out = tmp_path / "out"
    line = cli_error(
        capsys, ["train", str(path), "--out", str(out), "--set", "model.name=resnet18"]
    )
    assert (
        "model.name='resnet18' does not fit data.name='digits' (images 1×8×8): it takes "
        "3-channel images. Models that fit digits: mlp (--set model.name=...)"
    ) in line
    assert not list(out.rglob("record.zarr"))


@pytest.mark.parametrize(
    "model,data,message",
    [
        ("resnet20", "mnist", r"it takes 3-channel images\. Models that fit mnist: mlp, lenet"),
        ("resnet18", "fashion_mnist", r"it takes 3-channel images\. Models that fit"),
        ("lenet", "digits", r"input_size 8 is too small for LeNet-5\. Models that fit digits: mlp"),
    ],
)
def test_model_and_dataset_mismatches(tmp_path: Path, model: str, data: str, message: str) -> None:
    config = load_config(tiny_config(tmp_path), [f"model.name={model}", f"data.name={data}"])
    shape, classes = SHAPES[data]
    with pytest.raises(ConfigError, match=rf"model\.name='{model}' does not fit .*{message}"):
        preflight(config, shape, classes)


def test_every_bundled_config_fits_its_dataset_and_a_64_gib_machine() -> None:
    for name, path in bundled_configs().items():
        config = load_config(path)
        shape, classes = SHAPES[config.data.name]
        needed, _ = training_bytes(config, meta_model(config, shape, classes))
        assert needed < 64 * 2**30, name


def test_feedback_too_big_for_memory_names_rule_k_the_size_and_the_layer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tiny_config(tmp_path)
    out = tmp_path / "out"
    line = cli_error(capsys, ["train", str(path), "--out", str(out), "--set", "rule.k=100000"])
    assert "rule.k=100000 with rule.name='pfa' needs at least " in line
    assert "the biggest layer is fc2 (weight 512×512, bias 512, R 51200000×512" in line
    assert "B 512×51200000" in line and "Fix: lower rule.k" in line
    assert not list(out.rglob("record.zarr"))


def test_the_memory_estimate_counts_weights_feedback_gradients_and_optimizer_state(
    tmp_path: Path,
) -> None:
    config = load_config(tiny_config(tmp_path), ["rule.k=3"])  # SGD with momentum
    (shape, classes) = SHAPES["digits"]
    needed, layer = training_bytes(config, meta_model(config, shape, classes))
    weights = 64 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10
    R = 3 * (512 * 64 + 512 * 512 + 10 * 512)  # learned: value, gradient, momentum
    B = 512 * 3 * 512 * 2 + 10 * 30  # fixed: value only
    assert needed == 4 * (3 * (weights + R) + B) and layer == "fc2"
    preflight(config, shape, classes, memory_limit=needed)  # fits exactly
    with pytest.raises(ConfigError, match=r"rule\.k=3 .* more than the 0\.0 GiB available on cpu"):
        preflight(config, shape, classes, memory_limit=needed - 1)
    dfa = load_config(tiny_config(tmp_path), ["rule={name: dfa}"])
    with pytest.raises(ConfigError, match=r"model\.name='mlp' with rule\.name='dfa' .* smaller"):
        preflight(dfa, shape, classes, memory_limit=1)


def test_the_cpu_memory_bound_is_the_cgroup_limit_when_that_is_lower(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Slurm job or a container sees the host's MemAvailable but may only use its cgroup's."""
    monkeypatch.setattr(preflight_module, "CGROUP", tmp_path)
    write(tmp_path / "memory.max", "max\n")  # no limit: the host's
    write(tmp_path / "memory.current", "1000\n")
    host = available_memory("cpu")
    assert host is not None and host > 2**24
    write(tmp_path / "memory.max", f"{2**20 + 1000}\n")
    assert available_memory("cpu") == 2**20
    assert available_memory("meta") is None


@pytest.mark.parametrize("rule", list(RULES))
def test_the_preflight_draws_no_random_numbers(tmp_path: Path, rule: str) -> None:
    """Training draws its weights right after the preflight: it must leave the RNGs as it found
    them, or a run's record would depend on whether it was checked."""
    options = {"density": 0.5} if rule in ("fa", "dfa", "usf", "pfa") else {}
    config = load_config(tiny_config(tmp_path), [f"rule={{name: {rule}}}"])
    config.rule.update(options)
    torch.manual_seed(0)
    random.seed(0)
    torch_state, python_state = torch.get_rng_state(), random.getstate()
    preflight(config, *SHAPES["digits"])
    assert torch.equal(torch.get_rng_state(), torch_state) and random.getstate() == python_state
