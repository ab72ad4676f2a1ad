"""Config parsing and validation, bundled configs, and the paper's schedules."""

from __future__ import annotations

from pathlib import Path

import pytest

from alignment.config import (
    ConfigError,
    LRScheduleConfig,
    WeightDecayScheduleConfig,
    bundled_configs,
    load_config,
)
from alignment.training.schedules import learning_rate, weight_decay


def write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text,message",
    [
        (
            "optimm: {lr: 0.1}",
            r"unknown key 'optimm'; allowed keys under the top level: name, model",
        ),
        ("optim: {lrr: 0.1}", r"unknown key optim\.'lrr'; allowed keys under optim: name, lr,"),
        ("optim: {lr: fast}", r"optim\.lr must be float, got 'fast' \(str\)"),
        ("epochs: 2.5", r"epochs must be int, got 2\.5"),
        ("epochs: true", r"epochs must be int, got True"),
        ("epochs: 0", r"epochs must be > 0, got 0"),
        (
            "optim: {name: rmsprop}",
            r"optim\.name='rmsprop' is invalid; valid values: 'sgd', 'adam'",
        ),
        ("data: {name: svhn}", r"data\.name='svhn' is invalid; valid values: 'mnist5k', 'digits'"),
        ("rule: {name: pfa, k: 0}", r"rule: rule 'pfa': k=0 is invalid; k must be an int ≥ 1"),
        ("rule: {name: fa, k: 3}", r"rule 'fa' has no option k; valid options: density, init"),
        ("rule: {k: 3}", r"rule needs a name"),
        ("record: {jacobian: sometimes}", r"record\.jacobian must be 'epoch', 'never' or a step"),
        ("model: mlp", r"model must be a mapping"),
        ("seeds: []", r"seeds must list at least one seed"),
    ],
)
def test_invalid_configs_name_the_key_the_choices_and_the_file(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as error:
        load_config(path)
    assert str(path) in str(error.value)


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    path = write(tmp_path, "name: !!python/object/apply:os.system ['true']")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_overrides_set_any_field_with_yaml_typed_values(tmp_path: Path) -> None:
    path = write(tmp_path, "rule: {name: pfa, k: 10}\noptim: {lr: 0.01}")
    config = load_config(path, ["optim.lr=0.1", "rule.k=3", "data.root=/data", "epochs=2"])
    assert config.optim.lr == 0.1 and config.rule == {"name": "pfa", "k": 3}
    assert config.data.root == "/data" and config.epochs == 2
    with pytest.raises(ConfigError, match=r"unknown key optim\.'lrate'"):
        load_config(path, ["optim.lrate=0.1"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(path, ["optim.lr"])


def test_base_configs_are_deep_merged_and_rules_replaced(tmp_path: Path) -> None:
    write(tmp_path, "optim: {lr: 0.5, momentum: 0.8}\nrule: {name: pfa, k: 4}", "base.yaml")
    path = write(tmp_path, "base: base\noptim: {lr: 0.1}\nrule: {name: fa}")
    config = load_config(path)
    assert config.optim.lr == 0.1 and config.optim.momentum == 0.8
    assert config.rule == {"name": "fa"}


def test_every_bundled_config_loads_and_seeds_come_from_one_file() -> None:
    configs = {name: load_config(name) for name in bundled_configs()}
    paper = [c for name, c in configs.items() if name.startswith("paper/") and "base" not in name]
    assert {c.rule_name for c in paper if c.name.startswith("mnist_")} == {
        "bp",
        "fa",
        "dfa",
        "usf",
        "pfa",
        "pfa_o",
    }
    assert all(c.seeds == [0, 1, 2, 3, 4] for c in paper if not c.name.startswith("imagenet"))
    sparse = {(c.rule_name, c.rule["density"]) for c in paper if c.name.startswith("sparse_")}
    assert sparse == {
        (r, d) for r in ("fa", "dfa", "usf", "pfa") for d in (1, 0.5, 0.3, 0.17, 0.1, 0.05)
    }


def test_paper_hyperparameters_are_the_spec_s() -> None:
    pfa = load_config("paper/mnist_pfa")
    assert (pfa.optim.lr, pfa.optim.momentum, pfa.optim.weight_decay) == (0.01, 0.9, 0.03)
    assert (pfa.wd_schedule.gamma, pfa.rule["k"], pfa.epochs, pfa.data.batch_size) == (
        0.003,
        10,
        40,
        64,
    )
    assert pfa.lr_schedule.milestones == [20, 30] and pfa.lr_schedule.gamma == 0.5
    cifar_dfa = load_config("paper/cifar10_dfa")
    assert cifar_dfa.optim.lr == 0.001 and cifar_dfa.model.name == "resnet20"
    cifar_pfa = load_config("paper/cifar10_pfa")
    assert (cifar_pfa.optim.weight_decay, cifar_pfa.wd_schedule.gamma) == (0.005, 0.02)
    imagenet = load_config("paper/imagenet_pfa_o")
    assert (imagenet.optim.weight_decay, imagenet.wd_schedule.gamma, imagenet.epochs) == (
        5e-4,
        0.2,
        75,
    )


def test_weight_decay_schedule_follows_the_paper() -> None:
    """Paper: the configured wd applies during epoch 0 only, then wd × gamma from epoch 1 on."""
    schedule = WeightDecayScheduleConfig(gamma=0.003, burst_epochs=1)
    per_epoch = 937
    assert weight_decay(0.03, schedule, 0, per_epoch) == 0.03
    assert weight_decay(0.03, schedule, per_epoch - 1, per_epoch) == 0.03
    assert weight_decay(0.03, schedule, per_epoch, per_epoch) == pytest.approx(0.03 * 0.003)
    steps = WeightDecayScheduleConfig(gamma=0.003, burst_steps=937)
    assert weight_decay(0.03, steps, 936, 62) == 0.03
    assert weight_decay(0.03, steps, 937, 62) == pytest.approx(9e-5)


def test_multistep_lr_matches_torch_multisteplr() -> None:
    import torch

    schedule = LRScheduleConfig(name="multistep", milestones=[2, 4], gamma=0.5)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.01)
    torch_schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, [2, 4], 0.5)
    for epoch in range(6):
        assert learning_rate(0.01, schedule, epoch, 6) == pytest.approx(
            optimizer.param_groups[0]["lr"]
        )
        optimizer.step()
        torch_schedule.step()
