"""Sweep specs: one small YAML file, a base config plus lists over any field.

.. code-block:: yaml

    # PFA's k and feedback density on the MNIST-5k demo (the first line describes the sweep)
    name: pfa_k_density          # default: the file name; runs go to out/sweeps/<name>/<run id>
    config: demo/pfa             # a config file (next to the spec, or relative to the working
                                 # directory) or a bundled config name
    set:                         # dotted overrides applied to every run
      epochs: 5
    axes:                        # the grid: every combination, in the order written
      rule.k: [1, 2, 5, 10]      # any dotted field of the config
      rule.density: [1, 0.5]
      seed: [0, 1, 2]            # one run per seed
    slurm:                       # resources for --executor slurm (see alignment.sweeps.resources)
      partition: gpu
      time: "02:00:00"

An axis is ``config`` (a list of config files; then the top-level ``config`` is left out),
``seed``, or a dotted config field (``rule.k``, ``optim.lr``, ``rule`` with whole mappings such
as ``{name: pfa, k: 10}`` or plain rule names, …). Without a ``seed`` axis each combination
runs every seed in its config's ``seeds``. String values in ``set`` may name fields of the run's
final config in braces, e.g. ``name: "sparse_{rule.name}_{rule.density}"``.

A config is read (with its ``base:``), then ``set`` applies, then the run's axis values, then the
command line's ``--set``; placeholders are filled last.

Every problem stops with a :class:`~alignment.config.ConfigError` naming the key, the allowed
keys or values, and the file.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from alignment.config import Config, ConfigError, read_text

SPEC_DIR = Path(__file__).parent / "specs"
SPEC_KEYS = ("name", "config", "set", "axes", "slurm", "out")
SPECIAL_AXES = ("config", "seed")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class SweepSpec:
    """A parsed, validated sweep spec (see the module docstring for the format)."""

    name: str
    source: Path
    description: str = ""
    config: str | None = None
    set: dict[str, Any] = field(default_factory=dict)
    axes: dict[str, list[Any]] = field(default_factory=dict)
    slurm: dict[str, Any] = field(default_factory=dict)
    out: str | None = None

    def default_out(self) -> Path:
        """``out`` from the spec, else ``out/sweeps/<name>``."""
        return Path(self.out) if self.out else Path("out") / "sweeps" / self.name


def bundled_specs() -> dict[str, Path]:
    """Bundled sweep specs by name (``mnist``, ``cifar10``, ``sparse``, ``imagenet``)."""
    return {p.stem: p for p in sorted(SPEC_DIR.glob("*.yaml"))}


def find_spec(path_or_name: str | Path) -> Path:
    """A spec file: the path if it is a file, else the bundled spec of that name."""
    path = Path(path_or_name)
    if path.is_file():
        return path
    bundled = bundled_specs().get(str(path_or_name).removesuffix(".yaml"))
    if bundled is None and path.is_dir():
        raise ConfigError(f"sweep spec {str(path)!r} is a folder; give a spec file (YAML)")
    if bundled is None:
        names = ", ".join(bundled_specs())
        raise ConfigError(f"sweep spec {str(path)!r} not found (bundled sweep specs: {names})")
    return bundled


def load_spec(path_or_name: str | Path) -> SweepSpec:
    """Read (safe loader) and validate a sweep spec file or bundled spec name."""
    path = find_spec(path_or_name)
    text = read_text(path, "sweep spec")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    return spec_from_dict(data if data is not None else {}, path, _description(text))


def _description(text: str) -> str:
    lines = text.splitlines()
    return lines[0].lstrip("# ").strip() if lines and lines[0].startswith("#") else ""


def spec_from_dict(data: Any, source: Path, description: str = "") -> SweepSpec:
    """A validated :class:`SweepSpec` from a raw mapping (``source`` names the file in errors)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a sweep spec must be a mapping with keys {_keys(SPEC_KEYS)}")
    unknown = [key for key in data if key not in SPEC_KEYS]
    if unknown:
        raise ConfigError(
            f"{source}: unknown key {unknown[0]!r}; allowed keys of a sweep spec: "
            f"{_keys(SPEC_KEYS)}"
        )
    name = data.get("name", source.stem)
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ConfigError(
            f"{source}: name must be letters, digits, '.', '_' or '-' (a folder name), got {name!r}"
        )
    for key in ("config", "out"):
        if key in data and not isinstance(data[key], str):
            raise ConfigError(f"{source}: {key} must be a string, got {data[key]!r}")
    settings = _mapping(data, "set", source)
    axes = _mapping(data, "axes", source)
    slurm = _mapping(data, "slurm", source)
    for key in settings:
        check_field(key, source, "set")
    for key, values in axes.items():
        _check_axis(key, values, source)
    if "config" in axes and "config" in data:
        raise ConfigError(
            f"{source}: give either a top-level 'config' or a 'config' axis, not both"
        )
    if "config" not in axes and "config" not in data:
        raise ConfigError(
            f"{source}: no config: add 'config: <file or bundled name>' or an axis "
            "'config: [...]' (bundled configs: `alignment configs`)"
        )
    from alignment.sweeps.resources import resources_from_dict

    resources_from_dict(slurm, source)  # validated now, used by --executor slurm
    return SweepSpec(
        name=name,
        source=source,
        description=description,
        config=data.get("config"),
        set=settings,
        axes=axes,
        slurm=slurm,
        out=data.get("out"),
    )


def _keys(keys: typing.Iterable[str]) -> str:
    return ", ".join(keys)


def _mapping(data: dict[str, Any], key: str, source: Path) -> dict[str, Any]:
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: {key} must be a mapping, got {value!r}")
    bad = [k for k in value if not isinstance(k, str)]
    if bad:
        raise ConfigError(f"{source}: {key}: keys must be strings, got {bad[0]!r}")
    return dict(value)


def _check_axis(key: str, values: Any, source: Path) -> None:
    where = f"axes.{key}"
    if key not in SPECIAL_AXES:
        check_field(key, source, "axes")
    if key == "seeds":
        raise ConfigError(f"{source}: {where}: use the axis 'seed' (one run per seed)")
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{source}: {where} must be a non-empty list, got {values!r}")
    if key == "seed" and not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ConfigError(f"{source}: {where}: seeds must be integers, got {values!r}")
    if key == "config" and not all(isinstance(v, str) for v in values):
        raise ConfigError(f"{source}: {where}: configs must be file paths or bundled names")
    seen = [yaml.safe_dump(v) for v in values]
    for i, text in enumerate(seen):
        if text in seen[:i]:
            raise ConfigError(f"{source}: {where} lists {values[i]!r} more than once")


def check_field(dotted: str, source: Path | str, where: str) -> None:
    """Check that ``dotted`` names a :class:`~alignment.config.Config` field (any key under
    ``rule``); the error names the allowed keys at the level that went wrong."""
    cls: Any = Config
    parts = dotted.split(".")
    for depth, part in enumerate(parts):
        names = [f.name for f in dataclasses.fields(cls)]
        if part not in names:
            level = ".".join(parts[:depth]) or "the top level"
            axes = where == "axes" and not depth
            extra = ", or the sweep axes 'config' and 'seed'" if axes else ""
            raise ConfigError(
                f"{source}: {where}: unknown config field {dotted!r}; allowed keys under {level}: "
                f"{_keys(names)}{extra}"
            )
        hint = typing.get_type_hints(cls)[part]
        if part == "rule" and depth == 0:
            if len(parts) > 2:
                raise ConfigError(f"{source}: {where}: {dotted!r}: rule options are one level deep")
            return
        if not dataclasses.is_dataclass(hint):
            if depth != len(parts) - 1:
                section = ".".join(parts[: depth + 1])
                raise ConfigError(f"{source}: {where}: {dotted!r}: {section} is not a section")
            return
        cls = hint
