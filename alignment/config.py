"""Experiment configs: small YAML files parsed (safe loader) into typed, validated dataclasses.

An unknown key, a wrong type or an impossible value stops with a :class:`ConfigError` whose message
names the key, the allowed keys or values, and the file. ``--set a.b=value`` overrides any field
(the value is parsed as YAML, so ``--set optim.lr=0.1`` gives a float).

``name`` becomes a folder (``out/<name>`` by default), so it must be a plain relative path: one or
more parts joined by ``/``, each of letters, digits, ``.``, ``_`` and ``-`` and starting with a
letter or digit (no ``..``, no absolute path). Every number must be finite (no ``.nan``, ``.inf``).
``base: other`` names one file (a string, without ``.yaml``) relative to the config's folder; it is
read first and deep-merged, and may itself have a base (a loop is an error).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from alignment.recording.schema import DYNAMICS
from alignment.rules import make_rule


class ConfigError(ValueError):
    """An invalid experiment config; the message names the key, the valid choices and the file."""


@dataclass
class ModelConfig:
    """The network: a name from :data:`alignment.models.MODELS` and its weight init."""

    name: str = "mlp"
    init: str = "xavier"


@dataclass
class DataConfig:
    """Dataset, batching and where the files live (see :func:`alignment.data.load_dataset`)."""

    name: str = "mnist5k"
    root: str | None = None
    download: bool = False
    batch_size: int = 64
    eval_batch_size: int = 1000
    eval_split: str | None = None
    split_seed: int = 0
    verify_checksums: bool = True
    num_workers: int = 0


@dataclass
class OptimConfig:
    """SGD with momentum and coupled L2 (the paper's), or Adam / AdamW."""

    name: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = False
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])


@dataclass
class LRScheduleConfig:
    """Learning rate per epoch: ``multistep`` (lr·gamma^#{milestones ≤ epoch}), ``cosine`` or
    ``constant``."""

    name: str = "multistep"
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1


@dataclass
class WeightDecayScheduleConfig:
    """The paper's weight-decay burst: the configured weight decay applies during the first
    ``burst_epochs`` epochs (paper: 1, i.e. epoch 0 only), or the first ``burst_steps`` steps if
    given, and weight_decay × gamma afterwards. gamma = 1 means constant weight decay."""

    gamma: float = 1.0
    burst_epochs: int = 1
    burst_steps: int | None = None


@dataclass
class RecordConfig:
    """What the recorder writes: scalar quantities every ``every`` steps (plus every epoch start),
    Jacobians on ``jacobian`` (``epoch`` or ``never`` or a step interval), raw tensors of
    ``raw_layers`` at epoch starts, and the opt-in network-dynamics families ``dynamics``."""

    every: int = 50
    jacobian: str | int = "epoch"
    probe_size: int = 16
    raw_layers: list[str] = field(default_factory=list)
    flush_every: int = 10
    dynamics: list[str] = field(default_factory=list)
    """Network-dynamics families recorded on the probe (``jacobian``) schedule, e.g.
    ``[representations, spectra, gradient_noise]`` (``Recorder(dynamics=...)``); default none."""
    tensorboard: bool = False
    """Also write every record to TensorBoard event files in ``RUN/tensorboard/`` (needs the
    ``tensorboard`` extra; ``tensorboard --logdir OUT`` then shows every run under ``OUT``)."""


@dataclass
class Config:
    """One experiment: model × rule × data × optimiser × schedules, over one or more seeds."""

    name: str = "experiment"
    model: ModelConfig = field(default_factory=ModelConfig)
    rule: dict[str, Any] = field(default_factory=lambda: {"name": "bp"})
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    lr_schedule: LRScheduleConfig = field(default_factory=LRScheduleConfig)
    wd_schedule: WeightDecayScheduleConfig = field(default_factory=WeightDecayScheduleConfig)
    record: RecordConfig = field(default_factory=RecordConfig)
    epochs: int = 1
    seeds: list[int] = field(default_factory=lambda: [0])
    device: str = "auto"
    checkpoint_every: int = 0
    max_steps_per_epoch: int | None = None
    progress_every: float = 30.0
    """Seconds between progress lines when the output is not a terminal (Slurm, CI, a log)."""
    amp: str | bool = "off"
    """Mixed precision of the training step: ``off``, ``bf16`` or ``fp16`` (with a GradScaler)."""
    compile: bool | str = False
    """``true``: torch.compile the training forward and backward (inductor); or a backend name."""

    @property
    def rule_name(self) -> str:
        return self.rule["name"]

    @property
    def rule_options(self) -> dict[str, Any]:
        return {k: v for k, v in self.rule.items() if k != "name"}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


CHOICES: dict[str, tuple] = {
    "model.name": ("mlp", "lenet", "resnet20", "resnet32", "resnet56", "resnet18", "vit"),
    "model.init": ("xavier", "kaiming"),
    "data.name": ("mnist5k", "digits", "mnist", "fashion_mnist", "cifar10", "imagenet"),
    "data.eval_split": (None, "val", "test"),
    "optim.name": ("sgd", "adam", "adamw"),
    "lr_schedule.name": ("multistep", "cosine", "constant"),
    "device": ("auto", "cpu", "cuda"),
}
POSITIVE = (
    "epochs",
    "data.batch_size",
    "data.eval_batch_size",
    "record.every",
    "record.probe_size",
    "record.flush_every",
    "optim.lr",
)
NON_NEGATIVE = (
    "optim.momentum",
    "optim.weight_decay",
    "checkpoint_every",
    "progress_every",
    "data.num_workers",
    "wd_schedule.gamma",
    "wd_schedule.burst_epochs",
    "lr_schedule.gamma",
)


NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")


def _type_ok(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is Any:
        return True
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def _build(cls: type, data: Any, prefix: str, source: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'the config'} must be a mapping")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [key for key in data if key not in names]
    if unknown:
        raise ConfigError(
            f"{source}: unknown key {prefix}{unknown[0]!r}; allowed keys under "
            f"{prefix.rstrip('.') or 'the top level'}: {', '.join(names)}"
        )
    values = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, value, f"{prefix}{name}.", source)
            continue
        if not _type_ok(value, hint):
            raise ConfigError(
                f"{source}: {prefix}{name} must be {_type_name(hint)}, got {value!r} "
                f"({type(value).__name__})"
            )
        values[name] = float(value) if hint is float else value
    return cls(**values)


def _get(config: Config, dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def _non_finite(value: Any, key: str = "") -> tuple[str, float] | None:
    """The dotted key and value of the first NaN or infinite float in ``value``, else None."""
    if isinstance(value, float) and not math.isfinite(value):
        return key, value
    if isinstance(value, dict):
        children = [(f"{key}.{k}" if key else str(k), v) for k, v in value.items()]
    elif isinstance(value, list):
        children = [(f"{key}[{i}]", v) for i, v in enumerate(value)]
    else:
        return None
    for child_key, child in children:
        found = _non_finite(child, child_key)
        if found:
            return found
    return None


def _check_ranges(config: Config, source: str) -> None:
    """Fields whose valid range is not just positive / non-negative."""
    if not NAME_PATTERN.match(config.name):
        raise ConfigError(
            f"{source}: name={config.name!r} is invalid: it names the run's folder, so it must be "
            "letters, digits, '.', '_' or '-', starting with a letter or digit, with '/' only "
            "between such parts (no '..', no absolute path), e.g. name: mnist_pfa"
        )
    steps = config.max_steps_per_epoch
    if steps is not None and steps < 1:
        raise ConfigError(
            f"{source}: max_steps_per_epoch must be ≥ 1 (or null for whole epochs), got {steps!r}"
        )
    jacobian = config.record.jacobian
    if jacobian not in ("epoch", "never") and (isinstance(jacobian, str) or jacobian < 1):
        raise ConfigError(
            f"{source}: record.jacobian must be 'epoch', 'never' or a step interval ≥ 1, "
            f"got {jacobian!r}"
        )
    unknown = [name for name in config.record.dynamics if name not in DYNAMICS]
    if unknown:
        raise ConfigError(
            f"{source}: record.dynamics names unknown family {unknown[0]!r}; valid families: "
            f"{', '.join(DYNAMICS)}, e.g. record.dynamics: [spectra]"
        )
    burst = config.wd_schedule.burst_steps
    if burst is not None and burst < 0:
        raise ConfigError(
            f"{source}: wd_schedule.burst_steps must be ≥ 0 (or null to use burst_epochs), "
            f"got {burst!r}"
        )
    negative = [m for m in config.lr_schedule.milestones if m < 0]
    if negative:
        raise ConfigError(
            f"{source}: lr_schedule.milestones must be epochs ≥ 0, got {negative[0]!r} in "
            f"{config.lr_schedule.milestones!r}"
        )
    betas = config.optim.betas
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise ConfigError(
            f"{source}: optim.betas must be a pair of numbers in [0, 1), e.g. [0.9, 0.999], "
            f"got {betas!r}"
        )


AMP = ("off", "bf16", "fp16")


def _check_precision(config: Config, source: str) -> None:
    """``amp`` (YAML reads a bare ``off`` as false) and ``compile`` (a bool or a backend)."""
    if config.amp is False:
        config.amp = "off"
    if config.amp not in AMP:
        raise ConfigError(
            f"{source}: amp={config.amp!r} is invalid; valid values: {', '.join(AMP)} "
            "(bf16 on CPU, fp16 or bf16 on CUDA)"
        )
    if isinstance(config.compile, str):
        from torch._dynamo import list_backends

        backends = list_backends(exclude_tags=())
        if config.compile not in backends:
            raise ConfigError(
                f"{source}: compile={config.compile!r} is invalid; valid values: true, false or "
                f"a torch.compile backend: {', '.join(backends)}"
            )


def _check_values(config: Config, source: str) -> None:
    bad = _non_finite(config.to_dict())
    if bad:
        raise ConfigError(
            f"{source}: {bad[0]} must be a finite number, got {bad[1]!r}; NaN and infinity are "
            "not allowed anywhere in a config"
        )
    for key, choices in CHOICES.items():
        value = _get(config, key)
        if value not in choices:
            valid = ", ".join(repr(c) for c in choices)
            raise ConfigError(f"{source}: {key}={value!r} is invalid; valid values: {valid}")
    for key in POSITIVE:
        if _get(config, key) <= 0:
            raise ConfigError(f"{source}: {key} must be > 0, got {_get(config, key)!r}")
    for key in NON_NEGATIVE:
        if _get(config, key) < 0:
            raise ConfigError(f"{source}: {key} must be ≥ 0, got {_get(config, key)!r}")
    if "name" not in config.rule:
        raise ConfigError(f"{source}: rule needs a name, e.g. rule: {{name: pfa, k: 10}}")
    try:
        make_rule(config.rule_name, **config.rule_options)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{source}: rule: {error}") from None
    _check_ranges(config, source)
    _check_precision(config, source)
    if not config.seeds:
        raise ConfigError(f"{source}: seeds must list at least one seed")


def parse_override(text: str) -> tuple[str, Any]:
    """``"optim.lr=0.1"`` → ``("optim.lr", 0.1)`` (the value is parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. --set optim.lr=0.1")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys in a raw config mapping (before validation)."""
    for text in overrides:
        key, value = parse_override(text)
        target = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = target.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {text!r}: {part!r} is not a section")
            target = node
        target[leaf] = value
    return data


def config_from_dict(data: dict[str, Any], source: str = "<config>") -> Config:
    """A validated :class:`Config` from a raw mapping (``source`` names the file in errors)."""
    config = _build(Config, data, "", source)
    _check_values(config, source)
    return config


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (safe loader), apply ``--set`` overrides, validate."""
    path = Path(path)
    if not path.is_file():
        bundled = bundled_configs().get(str(path).removesuffix(".yaml"))
        if bundled is not None:
            path = bundled
        elif path.is_dir():
            raise ConfigError(
                f"config {str(path)!r} is a folder, not a config file; give a YAML file inside it "
                "or a bundled config name (`alignment configs`)"
            )
        else:
            raise ConfigError(
                f"config file {str(path)!r} not found (bundled configs: `alignment configs`)"
            )
    data = _read_yaml(path)
    return config_from_dict(apply_overrides(data, overrides or []), str(path))


def read_text(path: Path, what: str = "config") -> str:
    """The text of a UTF-8 file; a folder, another encoding or an unreadable file is a
    :class:`ConfigError` naming the file and the fix (``what`` names the kind of file)."""
    try:
        return path.read_text(encoding="utf-8")
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a {what} file; give a YAML file") from None
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path}: not a UTF-8 text file (byte {error.object[error.start]:#04x} at offset "
            f"{error.start}); a {what} file must be YAML saved as UTF-8"
        ) from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the {what} file: {error.strerror}") from None


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config mapping; ``base: other`` (a file relative to this one's folder) is read first and
    deep-merged. ``seen`` holds the resolved paths of the files that led here (loop detection)."""
    seen = (*seen, path.resolve())
    try:
        data = yaml.safe_load(read_text(path)) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of keys to values")
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(
            f"{path}: base must be the name of one config file (a string, without .yaml) "
            f"relative to this file's folder, e.g. base: mnist_base; got {base!r}"
        )
    base_path = path.parent / f"{base.removesuffix('.yaml')}.yaml"
    if base_path.resolve() in seen:
        chain = " -> ".join(str(p) for p in (*seen, base_path.resolve()))
        raise ConfigError(f"{path}: base {base!r} makes a loop ({chain}); remove one base: line")
    if not base_path.exists():
        raise ConfigError(
            f"{path}: base {base!r} not found: expected the file {base_path} (a base is "
            "relative to the folder of the file that names it)"
        )
    return _merge(_read_yaml(base_path, seen), data)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "rule":
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


CONFIG_DIR = Path(__file__).parent / "configs"


def bundled_configs() -> dict[str, Path]:
    """Bundled configs by name (``paper/mnist_pfa``, ``demo/pfa``, …)."""
    return {
        str(p.relative_to(CONFIG_DIR).with_suffix("")): p
        for p in sorted(CONFIG_DIR.rglob("*.yaml"))
    }
