"""A run folder belongs to one experiment: the config it was started with.

Continuing a run under another config would mix two experiments in one record (the first
steps at one learning rate, the rest at another, while ``config.yaml`` and the record's attrs
name only the first). :func:`check_run_config` refuses that, naming every differing key with
both values. Fields that cannot change what is learnt (:data:`NON_IDENTITY`: the name, the
device, where the data lives, …) may differ; the same list decides which fields a sweep's run
ID hashes (:func:`alignment.sweeps.expand.identity`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from alignment.config import Config, ConfigError, config_from_dict

NON_IDENTITY = (
    "name",
    "device",
    "data.root",
    "data.download",
    "data.num_workers",
    "data.verify_checksums",
    "record.flush_every",
    "record.tensorboard",
    "progress_every",
    "compile",
)
CONFIG_FILE = "config.yaml"


class _Absent:
    def __repr__(self) -> str:
        return "(absent)"


ABSENT = _Absent()
"""The value :func:`differences` reports for a field one side lacks."""


def run_config(config: Config, seed: int) -> dict[str, Any]:
    """What a run folder stores of ``config`` for one seed (``config.yaml``)."""
    return {**config.to_dict(), "seeds": [seed]}


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}{key}."))
        return flat or {prefix[:-1]: {}}
    if isinstance(value, list | tuple):
        return {prefix[:-1]: [_normalise(v) for v in value]}
    return {prefix[:-1]: _normalise(value)}


def _normalise(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list | tuple):
        return [_normalise(v) for v in value]
    return value


def _ignored(key: str, ignore: tuple[str, ...]) -> bool:
    return any(key == field or key.startswith(field + ".") for field in ignore)


def differences(
    theirs: dict[str, Any], ours: dict[str, Any], ignore: tuple[str, ...] = NON_IDENTITY
) -> list[tuple[str, Any, Any]]:
    """``(dotted key, their value, our value)`` for every field in which two config mappings
    differ, except those in ``ignore`` (and the fields below them); :data:`ABSENT` stands for a
    field one side lacks. Integral floats equal ints (``1.0 == 1``)."""
    a, b = _flatten(theirs), _flatten(ours)
    return [
        (key, a.get(key, ABSENT), b.get(key, ABSENT))
        for key in sorted(a.keys() | b.keys())
        if not _ignored(key, ignore) and a.get(key, ABSENT) != b.get(key, ABSENT)
    ]


def describe(diffs: list[tuple[str, Any, Any]], theirs: str, ours: str) -> str:
    """``"optim.lr: 0.01 in config.yaml, 0.05 now; …"``."""
    return "; ".join(f"{key}: {a!r} {theirs}, {b!r} {ours}" for key, a, b in diffs)


def read_run_config(run_dir: Path) -> Config:
    """The config a run folder was started with (its ``config.yaml``)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no {CONFIG_FILE})")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(
            f"{path}: not a readable config ({first}); restore it, or delete {run_dir}"
        ) from None
    return config_from_dict(data, str(path))


def check_run_config(run_dir: Path, config: Config, seed: int) -> None:
    """Raise :class:`~alignment.config.ConfigError` if ``run_dir`` holds a run of another
    config than ``config`` with ``seed`` (nothing to check if it holds no ``config.yaml``)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        return
    stored = read_run_config(run_dir).to_dict()
    diffs = differences(stored, run_config(config, seed))
    if diffs:
        raise ConfigError(
            f"{run_dir} holds a run of another config ({path}): "
            f"{describe(diffs, 'there', 'now')}. Continuing it would mix two experiments in "
            f"one record: train into another --out, or delete {run_dir} to start it afresh"
        )
