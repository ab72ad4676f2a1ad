"""A sweep spec expanded into runs: one config and one seed each, with a deterministic run ID.

The run ID is a readable label from the run's axis values plus a short hash of its resolved
config, e.g. ``pfa-k10-density0.5-seed3-1a2b3c4d``; the run trains into ``<out>/<run ID>``.
The hash covers every field of the config (with ``seeds: [seed]``) except those that cannot
change what is learnt (:data:`NON_IDENTITY`: the name, the device, where the data lives, …), so
moving a sweep to a cluster with another ``data.root`` finds the runs it already trained, while
any change that matters gives new run directories.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignment.config import (
    Config,
    ConfigError,
    _merge,
    _read_yaml,
    bundled_configs,
    config_from_dict,
    parse_override,
)
from alignment.sweeps.spec import SweepSpec, check_field
from alignment.training.runconfig import NON_IDENTITY

HASH_LENGTH = 8
_UNSAFE = re.compile(r"[^A-Za-z0-9._+=-]")


@dataclass(frozen=True)
class Run:
    """One run of a sweep: its ID, its axis values, its config (``seeds == [seed]``), its folder."""

    run_id: str
    values: dict[str, Any]
    config: Config
    seed: int
    run_dir: Path


def identity(config: Config) -> str:
    """The short stable hash of a config that names its run (fields in :data:`NON_IDENTITY`
    left out; integral floats written as ints, so ``density: 1`` and ``1.0`` agree)."""
    data = config.to_dict()
    for dotted in NON_IDENTITY:
        *parents, leaf = dotted.split(".")
        node = data
        for part in parents:
            node = node[part]
        node.pop(leaf, None)
    text = json.dumps(_normalise(data), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_LENGTH]


def _normalise(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _normalise(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normalise(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def assign(data: dict[str, Any], dotted: str, value: Any, where: str) -> None:
    """Set a dotted key in a raw config mapping; a mapping merges into a section (``rule`` is
    replaced whole, as in config files, and a string ``rule`` means ``{name: <string>}``)."""
    if dotted == "rule" and isinstance(value, str):  # rule: pfa is short for {name: pfa}
        value = {"name": value}
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{where}: {dotted!r}: {part!r} is not a section")
        node = child
    if isinstance(value, dict) and isinstance(node.get(leaf), dict) and dotted != "rule":
        node[leaf] = _merge(node[leaf], copy.deepcopy(value))
    else:
        node[leaf] = copy.deepcopy(value)


class _Fields:
    """Attribute access into a mapping, so that ``"{rule.density}"`` formats a config field."""

    def __init__(self, value: Any, path: str) -> None:
        self._value, self._path = value, path

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_") or not isinstance(self._value, dict) or key not in self._value:
            raise ConfigError(f"{{{self._path}.{key}}} is not a field of the run's config")
        return _wrap(self._value[key], f"{self._path}.{key}")

    def __format__(self, spec: str) -> str:
        return format(str(self._value), spec)


def _wrap(value: Any, path: str) -> Any:
    return _Fields(value, path) if isinstance(value, dict) else value


def fill(template: str, data: dict[str, Any], where: str) -> str:
    """``template`` with ``{dotted.field}`` placeholders filled from the raw config ``data``."""
    fields = {key: _wrap(value, key) for key, value in data.items()}
    try:
        return string.Formatter().vformat(template, (), fields)
    except KeyError as error:
        raise ConfigError(
            f"{where}: {{{error.args[0]}}} is not a field of the run's config; fields: "
            f"{', '.join(data)}"
        ) from None
    except (ConfigError, ValueError, IndexError) as error:
        raise ConfigError(f"{where}: cannot fill {template!r}: {error}") from None


def _sanitise(text: str) -> str:
    return _UNSAFE.sub("_", text)


def _text(value: Any) -> str:
    if isinstance(value, list):
        return "_".join(_text(v) for v in value)
    if isinstance(value, dict):
        return "-".join(f"{k}{_text(v)}" for k, v in value.items())
    return str(value)


def _label(key: str, value: Any, config_labels: dict[str, str]) -> str:
    if key == "config":
        return config_labels[value]
    leaf = key.rsplit(".", 1)[-1]
    if isinstance(value, dict):
        rest = [f"{k}{_text(v)}" for k, v in value.items() if k != "name"]
        return "-".join([str(value.get("name", leaf)), *rest])
    if leaf in ("name", "rule") and isinstance(value, str):
        return value
    return f"{leaf}{_text(value)}"


def config_labels(names: list[str]) -> dict[str, str]:
    """Short labels of config names: their file stems without the prefix they share
    (``paper/mnist_bp``, ``paper/mnist_fa`` → ``bp``, ``fa``)."""
    stems = [Path(n.removesuffix(".yaml")).name for n in names]
    if len(set(stems)) < len(stems):  # same file name in different folders
        stems = [n.removesuffix(".yaml").replace("/", "_").replace("\\", "_") for n in names]
    if len(stems) > 1:
        shortest = min(stems, key=len)
        differ = (i for i, c in enumerate(shortest) if any(s[i] != c for s in stems))
        common = shortest[: next(differ, len(shortest))]
        cut = max(common.rfind(c) for c in "_-.") + 1
        if cut and all(len(s) > cut for s in stems):
            stems = [s[cut:] for s in stems]
    return dict(zip(names, stems, strict=True))


def _config_path(name: str, spec: SweepSpec) -> Path:
    for candidate in (spec.source.parent / name, Path(name)):
        for path in (candidate, candidate.with_name(candidate.name + ".yaml")):
            if path.is_file():
                return path
    bundled = bundled_configs().get(name.removesuffix(".yaml"))
    if bundled is None:
        raise ConfigError(
            f"{spec.source}: config {name!r} not found next to the spec, in the working "
            "directory or among the bundled configs (`alignment configs`)"
        )
    return bundled


def _combinations(spec: SweepSpec) -> list[dict[str, Any]]:
    keys = list(spec.axes)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*spec.axes.values())]


def _raw_config(
    spec: SweepSpec,
    values: dict[str, Any],
    overrides: list[tuple[str, Any]],
    read: dict[str, dict[str, Any]],
    where: str,
) -> dict[str, Any]:
    name = values.get("config", spec.config)
    assert name is not None  # the spec has a config or a config axis
    if name not in read:
        read[name] = _read_yaml(_config_path(name, spec))
    data = copy.deepcopy(read[name])
    overridden = {key for key, _ in overrides}
    templates = {}
    for key, value in spec.set.items():
        if isinstance(value, str) and "{" in value:
            templates[key] = value
        else:
            assign(data, key, value, f"{spec.source}: set")
    for key, value in values.items():
        if key not in ("config", "seed"):
            assign(data, key, value, f"{spec.source}: axes")
    for key, value in overrides:
        assign(data, key, value, "--set")
    for key, template in templates.items():
        if key not in overridden:
            assign(data, key, fill(template, data, f"{where}: set.{key}"), where)
    return data


def expand(
    spec: SweepSpec, out: Path | str | None = None, overrides: list[str] | None = None
) -> list[Run]:
    """Every run of ``spec`` (axis combinations × seeds, in the order the axes are written),
    validated, with unique run IDs, in ``out`` (default :meth:`SweepSpec.default_out`).
    ``overrides`` (``["epochs=1", …]``, as ``--set``) apply to every run, after the axes."""
    out = Path(out) if out is not None else spec.default_out()
    parsed = [parse_override(text) for text in overrides or []]
    for key, _ in parsed:
        check_field(key, "--set", "--set")
    labels = config_labels(spec.axes.get("config", []))
    read: dict[str, dict[str, Any]] = {}
    runs: list[Run] = []
    for values in _combinations(spec):
        parts = [_label(k, v, labels) for k, v in values.items() if k != "seed"]
        where = f"{spec.source} (run {'-'.join(parts) or spec.name})"
        data = _raw_config(spec, values, parsed, read, where)
        base = config_from_dict(data, where)
        for seed in [values["seed"]] if "seed" in values else base.seeds:
            config = dataclasses.replace(base, seeds=[seed])
            named = [
                f"seed{seed}" if k == "seed" else _label(k, v, labels) for k, v in values.items()
            ]
            if "seed" not in values:
                named.append(f"seed{seed}")
            run_id = _sanitise("-".join([*named, identity(config)]))
            runs.append(Run(run_id, values, config, seed, out / run_id))
    _check_unique(runs, spec)
    return runs


def _check_unique(runs: list[Run], spec: SweepSpec) -> None:
    seen: dict[str, Run] = {}
    for run in runs:
        key = run.run_id.rsplit("-", 1)[-1]
        if key in seen:
            raise ConfigError(
                f"{spec.source}: runs {seen[key].run_id} and {run.run_id} train the same config "
                f"(axes and set differ only in fields that do not change a run: "
                f"{', '.join(NON_IDENTITY)}); drop one"
            )
        seen[key] = run
