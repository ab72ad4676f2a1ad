"""Sweep specs: loading, validation errors, expansion into runs, run IDs, the bundled paper
sweeps, Slurm resources, ``--dry-run`` and ``sweep-status`` (nothing is trained here)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from alignment.cli import main
from alignment.config import ConfigError, load_config
from alignment.runlock import run_lock
from alignment.sweeps import bundled_specs, expand, identity, load_spec
from alignment.sweeps.expand import config_labels
from alignment.sweeps.resources import (
    SlurmResources,
    parse_time,
    resources_from_dict,
    sbatch_parameters,
    with_overrides,
)
from alignment.sweeps.status import Status, run_state, summary
from alignment.sweeps.worker import ERROR

TINY_SET = {
    "epochs": 1,
    "max_steps_per_epoch": 2,
    "record.jacobian": "never",
    "record.every": 100,
    "record.probe_size": 4,
    "data.name": "digits",
    "data.batch_size": 16,
    "data.eval_batch_size": 500,
}


def write_spec(folder: Path, text: str | dict, name: str = "spec.yaml") -> Path:
    path = folder / name
    path.write_text(text if isinstance(text, str) else yaml.safe_dump(text, sort_keys=False))
    return path


def pfa_grid(folder: Path) -> Path:
    return write_spec(
        folder,
        {
            "config": "demo/pfa",
            "set": TINY_SET,
            "axes": {"rule.k": [1, 10], "rule.density": [1, 0.5], "seed": [0, 3]},
        },
    )


# ------------------------------------------------------------------------------ expansion
def test_expansion_is_the_product_in_axis_order_with_readable_ids(tmp_path: Path) -> None:
    runs = expand(load_spec(pfa_grid(tmp_path)), tmp_path / "out")
    assert len(runs) == 8
    labels = [run.run_id.rsplit("-", 1)[0] for run in runs]
    assert labels[:3] == ["k1-density1-seed0", "k1-density1-seed3", "k1-density0.5-seed0"]
    assert labels[-1] == "k10-density0.5-seed3"
    run = runs[-1]
    assert run.config.rule == {"name": "pfa", "k": 10, "density": 0.5}
    assert run.config.seeds == [3] and run.seed == 3
    assert run.config.epochs == 1 and run.config.data.name == "digits"
    assert run.run_dir == tmp_path / "out" / run.run_id
    suffix = run.run_id.rsplit("-", 1)[1]
    assert len(suffix) == 8 and suffix == identity(run.config)


def test_run_ids_are_deterministic_unique_and_follow_the_config(tmp_path: Path) -> None:
    spec = load_spec(pfa_grid(tmp_path))
    first = [run.run_id for run in expand(spec)]
    assert first == [run.run_id for run in expand(load_spec(spec.source))]
    assert len(set(first)) == len(first)
    # A field that cannot change what is learnt keeps the IDs; one that can changes them all.
    assert [r.run_id for r in expand(spec, overrides=["data.root=/elsewhere"])] == first
    assert [r.run_id for r in expand(spec, overrides=["device=cpu"])] == first
    changed = [r.run_id for r in expand(spec, overrides=["optim.lr=0.5"])]
    assert not set(changed) & set(first)


def test_run_id_ignores_yaml_key_order_and_int_float_spelling(tmp_path: Path) -> None:
    a = write_spec(
        tmp_path,
        {"config": "demo/fa", "set": {**TINY_SET, "rule.density": 1}, "axes": {"seed": [0]}},
        "a.yaml",
    )
    b = write_spec(
        tmp_path,
        {"axes": {"seed": [0]}, "set": {"rule.density": 1.0, **TINY_SET}, "config": "demo/fa"},
        "b.yaml",
    )
    assert expand(load_spec(a))[0].run_id == expand(load_spec(b))[0].run_id


def test_config_axis_rule_mappings_and_seeds_from_the_config(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text("base: base\nname: mine\nseeds: [4, 5]\n")
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"rule": {"name": "bp"}}))
    spec = write_spec(
        tmp_path,
        {
            "axes": {
                "config": ["mine", "demo/bp"],
                "rule": [{"name": "pfa", "k": 10}, "fa"],
            },
            "set": {"seeds": [4, 5], **TINY_SET},
        },
    )
    runs = expand(load_spec(spec))
    labels = [run.run_id.rsplit("-", 1)[0] for run in runs]
    assert labels[:4] == [
        "mine-pfa-k10-seed4",
        "mine-pfa-k10-seed5",
        "mine-fa-seed4",
        "mine-fa-seed5",
    ]
    assert labels[4] == "bp-pfa-k10-seed4"
    assert runs[0].config.name == "mine" and runs[0].config.rule == {"name": "pfa", "k": 10}
    assert runs[2].config.rule == {"name": "fa"}


def test_name_template_fills_fields_of_the_run(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path,
        {
            "config": "demo/fa",
            "set": {**TINY_SET, "name": "sweep_{rule.name}_{rule.density}_{optim.lr:g}"},
            "axes": {"rule.density": [1, 0.3], "seed": [0]},
        },
    )
    names = [run.config.name for run in expand(load_spec(spec))]
    assert names == ["sweep_fa_1_0.01", "sweep_fa_0.3_0.01"]  # demo/fa: lr 0.01


def test_config_labels_drop_the_shared_prefix() -> None:
    names = ["paper/mnist_bp", "paper/mnist_pfa", "paper/mnist_pfa_o"]
    assert list(config_labels(names).values()) == ["bp", "pfa", "pfa_o"]
    assert list(config_labels(["demo/bp"]).values()) == ["bp"]
    assert list(config_labels(["a/x", "b/x"]).values()) == ["a_x", "b_x"]


# ------------------------------------------------------------------------------ bundled specs
PAPER = {
    "mnist": (30, lambda r: f"paper/mnist_{r.run_id.split('-seed')[0]}"),
    "cifar10": (30, lambda r: f"paper/cifar10_{r.run_id.split('-seed')[0]}"),
    "imagenet": (4, lambda r: f"paper/imagenet_{r.run_id.split('-seed')[0]}"),
    "sparse": (
        120,
        lambda r: f"paper/sparse/{r.config.rule['name']}_{r.config.rule['density']}",
    ),
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_bundled_specs_expand_to_the_paper_configs(name: str) -> None:
    count, paper_config = PAPER[name]
    spec = load_spec(name)
    assert spec.description and spec.slurm
    runs = expand(spec)
    assert len(runs) == count
    assert len({run.run_id for run in runs}) == count
    assert {run.run_dir.parent for run in runs} == {Path("out/sweeps") / name}
    seeds = {run.seed for run in runs}
    assert seeds == ({0} if name == "imagenet" else {0, 1, 2, 3, 4})
    configs: dict[str, dict] = {}
    for run in runs:
        config_name = paper_config(run)
        if config_name not in configs:
            configs[config_name] = load_config(config_name).to_dict()
        assert run.config.to_dict() == {**configs[config_name], "seeds": [run.seed]}, run.run_id
    expected = {"mnist": 6, "cifar10": 6, "imagenet": 4, "sparse": 24}[name]
    assert len(configs) == expected


def test_bundled_specs_are_listed_and_found_by_name() -> None:
    assert sorted(bundled_specs()) == ["cifar10", "imagenet", "mnist", "sparse"]
    assert load_spec("sparse.yaml").name == "sparse"
    imagenet = resources_from_dict(load_spec("imagenet").slurm, "x")
    assert imagenet.gpus_per_node == imagenet.tasks_per_node == 4  # one DDP rank per GPU


# ------------------------------------------------------------------------------ errors
BAD_SPECS = [
    ({"config": "demo/bp", "axis": {}}, ["unknown key 'axis'", "allowed keys", "axes"]),
    (
        {"config": "demo/bp", "axes": {"optim.lrr": [0.1]}},
        ["optim.lrr", "allowed keys under optim", "lr", "momentum"],
    ),
    ({"config": "demo/bp", "axes": {"epoch": [1]}}, ["'epoch'", "epochs", "'config' and 'seed'"]),
    ({"config": "demo/bp", "axes": {"seeds": [1]}}, ["use the axis 'seed'"]),
    ({"config": "demo/bp", "axes": {"seed": 3}}, ["axes.seed must be a non-empty list"]),
    ({"config": "demo/bp", "axes": {"seed": []}}, ["non-empty list"]),
    ({"config": "demo/bp", "axes": {"seed": [0, "one"]}}, ["seeds must be integers"]),
    ({"config": "demo/bp", "axes": {"rule.k": [1, 1]}}, ["axes.rule.k lists 1 more than once"]),
    ({"axes": {"seed": [0]}}, ["no config"]),
    (
        {"config": "demo/bp", "axes": {"config": ["demo/fa"]}},
        ["either a top-level 'config' or a 'config' axis"],
    ),
    ({"config": "demo/bp", "set": {"optim.lr.x": 1}}, ["optim.lr", "not a section"]),
    ({"config": "demo/bp", "set": ["epochs=1"]}, ["set must be a mapping"]),
    ({"config": "demo/bp", "name": "a b"}, ["name must be", "folder name"]),
    (
        {"config": "demo/bp", "slurm": {"gpus": 1}},
        ["slurm.gpus", "allowed keys under slurm", "gpus_per_node"],
    ),
    ({"config": "demo/bp", "slurm": {"time": "two hours"}}, ["slurm.time", "02:00:00"]),
    ({"config": "demo/bp", "slurm": {"cpus_per_task": 0}}, ["slurm.cpus_per_task", "≥ 1"]),
]


@pytest.mark.parametrize(("data", "fragments"), BAD_SPECS)
def test_invalid_specs_name_the_key_the_choices_and_the_file(
    tmp_path: Path, data: dict, fragments: list[str]
) -> None:
    path = write_spec(tmp_path, data)
    with pytest.raises(ConfigError) as error:
        load_spec(path)
    message = str(error.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    ("data", "fragments"),
    [
        ({"config": "nope/missing", "axes": {"seed": [0]}}, ["'nope/missing' not found"]),
        (
            {"config": "demo/bp", "axes": {"optim.lr": [0.1, -1]}},
            ["(run lr-1)", "optim.lr must be > 0"],
        ),
        (
            {"config": "demo/bp", "axes": {"rule.k": [2]}},
            ["(run k2)", "rule:"],
        ),
        ({"config": "demo/bp", "set": {"name": "x_{rule.k}"}}, ["{rule.k}", "not a field"]),
        ({"config": "demo/bp", "set": {"name": "x_{nope}"}}, ["{nope}", "not a field"]),
    ],
)
def test_invalid_runs_name_the_run_and_the_file(
    tmp_path: Path, data: dict, fragments: list[str]
) -> None:
    path = write_spec(tmp_path, data)
    with pytest.raises(ConfigError) as error:
        expand(load_spec(path))
    assert str(path) in str(error.value)
    for fragment in fragments:
        assert fragment in str(error.value)


def test_a_missing_spec_lists_the_bundled_ones_and_the_cli_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="bundled sweep specs: cifar10, imagenet, mnist, sparse"):
        load_spec(tmp_path / "nope.yaml")
    bad = write_spec(tmp_path, {"config": "demo/bp", "axes": {"optim.lrr": [1]}})
    assert main(["sweep", str(bad), "--dry-run"]) == 2
    assert main(["sweep-status", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("alignment: error:") == 2 and "optim.lrr" in err


def test_duplicate_runs_are_refused(tmp_path: Path) -> None:
    path = write_spec(tmp_path, {"config": "demo/bp", "axes": {"device": ["cpu", "auto"]}})
    with pytest.raises(ConfigError, match="train the same config"):
        expand(load_spec(path))


# ------------------------------------------------------------------------------ resources
@pytest.mark.parametrize(
    ("text", "minutes"),
    [
        (90, 90),
        ("90", 90),
        ("30:30", 31),
        ("02:00:00", 120),
        ("1-00", 1440),
        ("1-12:30", 2190),
        ("2-00:00:00", 2880),
    ],
)
def test_slurm_times_are_minutes(text: str | int, minutes: int) -> None:
    assert parse_time(text) == minutes


@pytest.mark.parametrize("text", ["", "1h", "0", 0, -5, "1:2:3:4", True, 1.5])
def test_bad_slurm_times_are_refused(text: object) -> None:
    with pytest.raises(ConfigError):
        parse_time(text)


def test_command_line_resources_override_the_spec() -> None:
    spec = resources_from_dict(
        {"partition": "cpu", "time": "01:00:00", "cpus_per_task": 2, "setup": ["echo hi"]}, "s"
    )
    assert spec == SlurmResources(partition="cpu", time=60, cpus_per_task=2, setup=("echo hi",))
    merged = with_overrides(spec, partition="gpu", time="0-02", gpus_per_node=1, mem_gb=None)
    params = sbatch_parameters(merged, "job")
    assert params == {
        "job_name": "job",
        "time": 120,
        "cpus_per_task": 2,
        "array_parallelism": 32,
        "partition": "gpu",
        "gpus_per_node": 1,
        "setup": ["echo hi"],
    }
    assert sbatch_parameters(with_overrides(spec, mem_gb=1.5), "j")["mem"] == "1536MB"
    with pytest.raises(ConfigError, match=r"command line: slurm\.gpus_per_node"):
        with_overrides(spec, gpus_per_node=-1)


# ------------------------------------------------------------------------------ status and CLI
def test_status_reads_each_run_folder(tmp_path: Path) -> None:
    runs = expand(load_spec(pfa_grid(tmp_path)), tmp_path / "out")
    done, failed, interrupted, running, _ = runs[:5]
    done.run_dir.mkdir(parents=True)
    (done.run_dir / "DONE").write_text('{"final_accuracy": 0.5, "best_accuracy": 0.75, "steps": 9}')
    failed.run_dir.mkdir(parents=True)
    (failed.run_dir / ERROR).write_text("Traceback ...\nRuntimeError: boom\n")
    (interrupted.run_dir / "record.zarr").mkdir(parents=True)
    states = {run.run_id: run_state(run) for run in runs[:5]}
    with run_lock(running.run_dir) as held:
        assert held
        states[running.run_id] = run_state(running)
    assert [states[r.run_id].status for r in runs[:5]] == [
        Status.DONE,
        Status.FAILED,
        Status.INTERRUPTED,
        Status.RUNNING,
        Status.PENDING,
    ]
    assert states[done.run_id].detail == "final 50.00 %, best 75.00 %, 9 steps"
    assert states[failed.run_id].detail == "RuntimeError: boom"
    assert "no checkpoint yet" in states[interrupted.run_id].detail
    assert run_state(running).status == Status.PENDING  # the lock is released
    assert summary(list(states.values())) == (
        "5 runs: 1 done, 1 running, 1 failed, 1 interrupted, 1 pending"
    )


def test_dry_run_lists_the_runs_and_trains_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = pfa_grid(tmp_path)
    out = tmp_path / "out"
    runs = expand(load_spec(spec), out)
    runs[0].run_dir.mkdir(parents=True)
    (runs[0].run_dir / "DONE").write_text('{"final_accuracy": 1, "best_accuracy": 1, "steps": 2}')
    (runs[1].run_dir).mkdir()
    (runs[1].run_dir / "checkpoint.pt").write_bytes(b"")
    assert main(["sweep", str(spec), "--out", str(out), "--jobs", "2", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "8 runs: 1 done, 1 interrupted, 6 pending" in printed
    actions = dict(line.split(maxsplit=1) for line in printed.splitlines()[1:])
    assert list(actions) == [run.run_id for run in runs]
    assert [actions[r.run_id] for r in runs[:3]] == ["skip (done)", "resume", "start"]
    assert "sbatch" not in printed
    assert sorted(p.name for p in out.iterdir()) == sorted(r.run_id for r in runs[:2])


def test_dry_run_for_slurm_prints_the_sbatch_script(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_spec(
        tmp_path,
        {
            "name": "tiny",
            "config": "demo/bp",
            "axes": {"seed": [0, 1, 2]},
            "slurm": {"partition": "gpu", "time": "03:00:00", "gpus_per_node": 1, "mem_gb": 8},
        },
    )
    out = tmp_path / "out"
    args = ["sweep", str(spec), "--executor", "slurm", "--dry-run", "--out", str(out)]
    assert main([*args, "--cpus", "5", "--jobs", "2"]) == 0
    printed = capsys.readouterr().out
    for line in [
        "# sbatch script for 3 run(s) (not submitted):",
        "#SBATCH --partition=gpu",
        "#SBATCH --time=180",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --cpus-per-task=5",
        "#SBATCH --mem=8GB",
        "#SBATCH --array=0-2%2",
        "#SBATCH --job-name=alignment-tiny",
        f"#SBATCH --output={out.absolute()}/.submitit/%A_%a_0_log.out",
    ]:
        assert line in printed
    assert not out.exists()


def test_sweep_status_prints_a_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = pfa_grid(tmp_path)
    out = tmp_path / "out"
    runs = expand(load_spec(spec), out)
    runs[2].run_dir.mkdir(parents=True)
    (runs[2].run_dir / "DONE").write_text(
        '{"final_accuracy": 0.9, "best_accuracy": 0.95, "steps": 4}'
    )
    (out / "old-run").mkdir()
    (out / "old-run" / "config.yaml").write_text("{}")
    assert main(["sweep-status", str(spec), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["run", "status", "detail"]
    assert lines[2].split() == [runs[0].run_id, "pending"]
    assert lines[4].split()[:3] == [runs[2].run_id, "done", "final"]
    assert lines[-2] == "8 runs: 1 done, 7 pending"
    assert lines[-1].startswith("1 other run folder(s)")
