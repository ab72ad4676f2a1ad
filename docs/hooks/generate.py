"""MkDocs hook: the parts of the site that are generated from the code, so they cannot drift.

A page asks for a generated part with a marker on a line of its own:

* ``<!-- generate: rules -->``: one section per rule in ``alignment.RULES`` (equation, docstring,
  options with their defaults from the rule's dataclass fields, the feedback tensors a converted
  layer holds, a minimal example);
* ``<!-- generate: schema -->``: every dim, variable, layer coordinate, raw quantity and run attr
  of ``alignment.recording.schema``;
* ``<!-- generate: theory-tests -->``: every test of ``tests/test_theory.py`` and
  ``tests/test_properties.py`` with the first line of its docstring;
* ``<!-- generate: gallery -->``: every figure ``docs/*.png`` with its caption ``docs/*.md``;
* ``<!-- readme: NAME -->``: the README's block between ``<!-- NAME: start -->`` and
  ``<!-- NAME: end -->`` (the README's examples, which tests run, are shown as they are).

An unknown marker, a rule option or a schema dim without a description here stops the build.
The functions are plain (no mkdocs import), so ``tests/test_docs.py`` calls them directly.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # document this checkout's code, not another installed copy
    sys.path.insert(0, str(ROOT))
MARKER = re.compile(r"^<!-- (generate|readme): ([\w-]+) -->$", re.MULTILINE)
CONFIG_DIR = ROOT / "alignment" / "configs"  # what alignment.config.bundled_configs lists
SPEC_DIR = ROOT / "alignment" / "sweeps" / "specs"  # alignment.sweeps.spec.SPEC_DIR
THEORY_TEST_FILES = ("tests/test_theory.py", "tests/test_properties.py")

OPTION_DOCS = {
    "k": "expansion ratio: B is N_out × k·N_out, R is k·N_out × N_in (int ≥ 1)",
    "b_init": "how B is drawn: `random` (Xavier-uniform, E[B Bᵀ] = I), `orthogonal` or "
    "`identity` (both need k = 1; `identity` makes PFA Kolen–Pollack)",
    "density": "feedback density ρ ∈ (0, 1]: fixed Bernoulli(ρ) masks on the feedback tensors",
    "init": "initialisation of the random feedback: `xavier` (the paper's) or `kaiming`",
    "path": "contraction order of PFA's backward: `auto` (the cheaper one), `product` "
    "(δ·(B·R)) or `two_stage` (explicit feedback neurons (δB)R); the same mathematics",
    "out_features": "C, the width of the output error e_out; None: inferred from the model's "
    "last `nn.Linear`",
}
"""What each rule option means (a new option without an entry here stops the build)."""

DIM_DOCS = {
    "step": "training step of a record (coordinate `epoch` on it); the record of step s holds "
    "the weights that s updates produced",
    "layer": "converted layers, named by their module path, in forward order (coordinates: "
    "the layer coordinates below)",
    "sample": "the fixed probe batch, one entry per probe sample",
    "sv": "singular values, in descending order, NaN-padded",
    "eig": "eigenvalues, in ascending order, NaN-padded",
    "unit": "units (features or channels) of a layer's output, NaN-padded to the widest layer",
    "rank": "singular values of a weight-shaped matrix, in descending order, NaN-padded",
}
"""What each dim of the schema's variables means (the page lists those the schema uses)."""

SCHEDULE_DOCS = {
    "main": "every record of the main schedule (`Recorder(schedule=...)`)",
    "probe": "only the records of the probe schedule (`Recorder(jacobian_schedule=...)`), "
    "NaN at the others",
    "main (DFA layers: probe)": "every main record; DFA layers only at the probe records "
    "(they measure against the probe-mean Jacobian)",
    "once": "the static part of the run: no `step` dim",
    "loop": "the steps at which the training loop logged it (`rec.log(...)`, the trainer's "
    "evaluation)",
}

ATTR_DOCS = {
    "config": "JSON of the `config=` given to the Recorder (the trainer gives its resolved "
    "config; `{}` when none)",
    "rule": "registry name of the layers' rule (`pfa`, …; `a+b` when layers use different rules)",
    "rule_options": "JSON of the rule's options, defaults filled in (per layer when rules differ)",
    "seed": "the `seed=` given to the Recorder (-1 when none)",
    "alignment_version": "version of this package that wrote the record",
    "torch_version": "version of torch that trained the run",
    "python_version": "version of Python that trained the run",
    "git_sha": "commit of the code that wrote the record (`unknown` outside a git checkout)",
    "start_time": "when the run started (ISO 8601, UTC, seconds)",
}
"""The meaning of each required run attr (a new one without an entry here stops the build)."""

OPTIONAL_ATTRS = {
    "tags": "JSON object of your own factors, a flat mapping from identifier to string or "
    'number (`Recorder(tags={"wd": "burst"})`); `"{}"` when none',
    "quantities": "JSON list of the variables the recorder computes",
    "steps_per_epoch": "the `steps_per_epoch=` given to the Recorder (-1 when none)",
    "schedule, jacobian_schedule, raw_schedule": "the three schedules, as their `repr`",
    "raw_layers": "JSON list of the layers whose raw tensors are recorded",
    "loss_fn": "name of the loss function the recorder measures with",
    "run_dims": "combined runs (`alignment.open_runs`): JSON list of the dims added in front of "
    'every variable\'s dims, e.g. `["run"]`',
}
"""Attrs the recorder writes besides the required ones (not checked by the validator)."""

UNITS = {
    "1": "dimensionless",
    "deg": "degrees, in [0, 180]",
    "nat": "nats (natural-log loss)",
    "s": "seconds",
    "": "text (the attr is the empty string)",
}


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _docstring(obj: object) -> str:
    doc = (obj.__doc__ or "").strip()
    return " ".join(doc.split())


# ------------------------------------------------------------------------------------- rules


def rule_example(name: str, options: dict[str, object]) -> str:
    """Python code that converts the MNIST MLP under rule ``name`` with ``options`` spelled out."""
    args = "".join(f", {key}={value!r}" for key, value in options.items())
    return (
        "import torch\nimport alignment\n\n"
        "model = alignment.models.mlp()  # the paper's MNIST MLP, 784-512-512-10\n"
        f'net = alignment.convert(model, "{name}"{args})\n'
        "loss = torch.nn.functional.cross_entropy(net(torch.randn(8, 784)), torch.arange(8))\n"
        "loss.backward()  # W's gradient now follows the rule\n"
    )


def _feedback_tensors(name: str) -> list[tuple[str, ...]]:
    """The feedback tensors of the first layer of a small net converted under rule ``name``."""
    import torch
    from torch import nn

    import alignment

    torch.manual_seed(0)
    net = alignment.convert(nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3)), name)
    layer = net[0]
    rows = [
        (f"`{n}`", "×".join(map(str, p.shape)), "learned (Parameter, updated by the optimizer)")
        for n, p in layer.named_parameters()
        if n not in ("weight", "bias")
    ]
    rows += [
        (f"`{n}`", "×".join(map(str, b.shape)), "fixed (buffer)") for n, b in layer.named_buffers()
    ]
    return rows


def _documented_options(cls: type) -> list[dataclasses.Field]:
    fields = list(dataclasses.fields(cls))
    missing = [f.name for f in fields if f.name not in OPTION_DOCS]
    if missing:
        raise ValueError(
            f"rule {cls.name!r} has options {missing} without a description: add them to "
            "OPTION_DOCS in docs/hooks/generate.py"
        )
    return fields


def rules_markdown() -> str:
    """One section per registered rule, from the rule classes themselves."""
    import inspect

    from alignment.rules import RULES

    sections = []
    for name, cls in RULES.items():
        label = cls.label or name.upper()
        fields = _documented_options(cls)
        module_doc = inspect.getmodule(cls).__doc__ or ""
        parts = [
            f"## `{name}`: {label}",
            f"*{_cell(module_doc.strip().splitlines()[0])}*",
            f"**Equation:** {cls.equation}" if cls.equation else "",
            _docstring(cls),
            f"Class `{cls.__module__}.{cls.__qualname__}`; tables and figures label it *{label}* "
            f"in colour `{cls.color or 'derived from the name'}`; its `feedback_alignment` is "
            + (f"the {cls.alignment_kind} alignment." if cls.alignment_kind else "0° (W itself)."),
        ]
        if fields:
            parts.append(
                _table(
                    ("option", "default", "type", "meaning"),
                    [
                        (f"`{f.name}`", f"`{f.default!r}`", f"`{f.type}`", OPTION_DOCS[f.name])
                        for f in fields
                    ],
                )
            )
        else:
            parts.append("No options.")
        tensors = _feedback_tensors(name)
        if tensors:
            parts.append(
                "Feedback tensors of a converted `Linear(6, 4)` (in a net with 3 outputs):\n\n"
                + _table(("tensor", "shape", "kind"), tensors)
            )
        else:
            parts.append("No feedback tensors: the backward reads W itself.")
        defaults = {f.name: f.default for f in fields if f.name != "out_features"}
        parts.append("```python\n" + rule_example(name, defaults) + "```")
        sections.append("\n\n".join(p for p in parts if p))
    return "\n\n".join(sections)


# ------------------------------------------------------------------------------------ schema


def _units(units: str) -> str:
    return f"`{units}`" if units else "(none)"


def _dims(dims: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"`{d}`" for d in dims) + ")"


def schema_markdown() -> str:
    """Every part of the recording schema, as tables."""
    from alignment.recording import schema as s

    used = {d for v in s.VARIABLES.values() for d in v.dims}
    undocumented = sorted(used - set(DIM_DOCS))
    schedules = {v.schedule for v in s.VARIABLES.values()} - set(SCHEDULE_DOCS)
    attrs = [a for a in s.REQUIRED_ATTRS if a not in ATTR_DOCS]
    units = {v.units for v in (*s.VARIABLES.values(), *s.LAYER_COORDS.values())} - set(UNITS)
    if undocumented or schedules or attrs or units:
        raise ValueError(
            "the schema has parts without a description in docs/hooks/generate.py: "
            f"dims {undocumented}, schedules {sorted(schedules)}, attrs {attrs}, units {units}"
        )

    def rows(select: Callable[[tuple[str, ...]], bool]) -> list[tuple[str, ...]]:
        return [
            (f"`{name}`", v.long_name, _units(v.units), _dims(v.dims), v.schedule, v.description)
            for name, v in s.VARIABLES.items()
            if select(v.dims)
        ]

    header = ("variable", "long name", "units", "dims", "schedule", "meaning")
    groups = [
        ("Network level", lambda d: d == ("step",)),
        ("Per layer", lambda d: d[:2] == ("step", "layer")),
        ("Once per run", lambda d: "step" not in d),
    ]
    dims = [(f"`{k}`", v) for k, v in DIM_DOCS.items() if k in used]
    out = ["### Dims", _table(("dim", "meaning"), dims)]
    out.append(
        "### Units\n\n"
        + _table(("units attr", "meaning"), [(_units(k), v) for k, v in UNITS.items()])
    )
    out.append(
        "### Schedules\n\nThe attr `schedule` of each variable says which records hold it.\n\n"
        + _table(("schedule", "records"), [(f"`{k}`", v) for k, v in SCHEDULE_DOCS.items()])
    )
    for title, select in groups:
        out.append(f"### {title}\n\n" + _table(header, rows(select)))
    probe = s.PROBE_INPUT
    probe_dims = "; ".join(f"{n}-d input: {_dims(d)}" for n, d in s.PROBE_INPUT_DIMS.items())
    out.append(
        "### Probe input and your own scalars\n\n"
        + _table(
            ("variable", "long name", "units", "dims", "schedule", "meaning"),
            [
                (
                    "`probe_input`",
                    probe.long_name,
                    _units(probe.units),
                    probe_dims,
                    probe.schedule,
                    probe.description,
                ),
                (
                    f"`{s.USER_PREFIX}<name>`",
                    "`<name>`",
                    "the `units=` given to `rec.log` (default `1`)",
                    _dims(("step",)),
                    s.LOOP,
                    "a scalar of your own, `rec.log(<name>=value)`",
                ),
            ],
        )
    )
    out.append(
        "### Layer coordinates\n\nCoordinates on the `layer` dim that describe each layer.\n\n"
        + _table(
            ("coordinate", "long name", "units", "meaning"),
            [
                (f"`{n}`", v.long_name, _units(v.units), v.description)
                for n, v in s.LAYER_COORDS.items()
            ],
        )
    )
    out.append(
        "### Raw tensors\n\n"
        f"Opt-in per layer (`Recorder(raw_layers=...)`), read with "
        f"`alignment.recording.open_raw`. One variable per quantity and layer, named "
        f"`<quantity>{s.RAW_SEPARATOR}<layer>`, on its own step dim `{s.RAW_STEP}` (coordinate "
        f"`{s.RAW_EPOCH}`), with the layer's own dims `<layer>{s.RAW_SEPARATOR}out`, "
        f"`<layer>{s.RAW_SEPARATOR}in`, `<layer>{s.RAW_SEPARATOR}kh`, "
        f"`<layer>{s.RAW_SEPARATOR}kw` (weight-shaped tensors) or "
        f"{', '.join(f'`{d}`' for d in s.RAW_SHARED_DIMS)} and the layer's output dims "
        "(Jacobians); each carries the attr `layer`.\n\n"
        + _table(
            ("quantity", "long name", "units", "meaning"),
            [
                (f"`{n}`", q.long_name, _units(q.units), q.description)
                for n, q in s.RAW_QUANTITIES.items()
            ],
        )
    )
    out.append(
        "### Run attrs\n\nRequired on every record (`alignment.recording.validate` checks "
        "them):\n\n"
        + _table(("attr", "meaning"), [(f"`{a}`", ATTR_DOCS[a]) for a in s.REQUIRED_ATTRS])
        + "\n\nOptional:\n\n"
        + _table(("attr", "meaning"), [(f"`{a}`", d) for a, d in OPTIONAL_ATTRS.items()])
        + "\n\nTag names that are reserved (they would collide with a factor or a dim of "
        "combined runs): " + ", ".join(f"`{t}`" for t in sorted(s.RESERVED_TAGS)) + "."
    )
    out.append(
        "Wall-clock variables, the only ones in which two runs with the same seed differ: "
        + ", ".join(f"`{t}`" for t in s.TIMINGS)
        + "."
    )
    return "\n\n".join(out)


# ------------------------------------------------------------------------------- theory tests


def theory_tests() -> list[tuple[str, str, str]]:
    """(file, test name, first docstring line) of every test in the theory test files."""
    found = []
    for file in THEORY_TEST_FILES:
        tree = ast.parse((ROOT / file).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                doc = (ast.get_docstring(node) or "").strip().split("\n\n")[0]
                found.append((file, node.name, " ".join(doc.split())))
    return found


def theory_tests_markdown() -> str:
    rows = [(f"`{name}`", f"`{file}`", doc) for file, name, doc in theory_tests()]
    return _table(("test", "file", "what it checks"), rows)


# ----------------------------------------------------------------------------- configs, sweeps


def _header(path: Path) -> str:
    """The comment lines at the top of a YAML file, joined."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return " ".join(lines)


def configs_markdown() -> str:
    """Every bundled config (``alignment configs``) with its header comment."""
    rows = [
        (f"`{path.relative_to(CONFIG_DIR).with_suffix('').as_posix()}`", _header(path))
        for path in sorted(CONFIG_DIR.rglob("*.yaml"))
        if path.parent.name != "sparse" or path.stem.endswith("_1")
    ]
    sparse = sorted(p.stem for p in (CONFIG_DIR / "paper" / "sparse").glob("*.yaml"))
    return (
        _table(("config", "what it trains"), rows)
        + f"\n\nPlus `paper/sparse/<rule>_<density>` for every one of the {len(sparse)} "
        "sparse-feedback runs (" + ", ".join(f"`{s}`" for s in sparse[:3]) + ", …); the table "
        "shows those at density 1."
    )


def sweeps_markdown() -> str:
    """Every bundled sweep spec with its header comment and Slurm resources."""
    import yaml

    rows = []
    for path in sorted(SPEC_DIR.glob("*.yaml")):
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
        slurm = ", ".join(f"{k}: {v}" for k, v in (spec.get("slurm") or {}).items())
        rows.append((f"`{path.stem}`", _header(path), slurm))
    return _table(("spec", "runs", "Slurm resources (the spec's `slurm:`)"), rows)


# ------------------------------------------------------------------------------------ gallery


def gallery_markdown() -> str:
    """Every committed figure ``docs/*.png`` with its caption ``docs/<same name>.md``."""
    out = []
    for png in sorted((ROOT / "docs").glob("*.png")):
        caption = png.with_suffix(".md")
        if not caption.exists():
            raise ValueError(f"figure {png.name} has no caption {caption.name} beside it")
        text = caption.read_text(encoding="utf-8").strip()
        out.append(f"## {png.stem}\n\n![{png.stem}]({png.name})\n\n{text}")
    return "\n\n".join(out)


# ------------------------------------------------------------------------------------- README


def readme_block(name: str) -> str:
    """The README's text between ``<!-- NAME: start -->`` and ``<!-- NAME: end -->``."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(
        rf"<!-- {re.escape(name)}: start -->\n(.*?)<!-- {re.escape(name)}: end -->", text, re.DOTALL
    )
    if match is None:
        raise ValueError(f"README.md has no block <!-- {name}: start --> … <!-- {name}: end -->")
    return match.group(1).strip()


GENERATORS: dict[str, Callable[[], str]] = {
    "rules": rules_markdown,
    "schema": schema_markdown,
    "theory-tests": theory_tests_markdown,
    "gallery": gallery_markdown,
    "configs": configs_markdown,
    "sweeps": sweeps_markdown,
}


def expand(markdown: str) -> str:
    """``markdown`` with every marker replaced by what it asks for."""

    def replace(match: re.Match[str]) -> str:
        kind, name = match.groups()
        if kind == "readme":
            return readme_block(name)
        if name not in GENERATORS:
            raise ValueError(f"unknown marker <!-- generate: {name} -->; known: {list(GENERATORS)}")
        return GENERATORS[name]()

    return MARKER.sub(replace, markdown)


def on_page_markdown(markdown: str, **kwargs: object) -> str:
    """MkDocs hook: expand the markers of every page."""
    return expand(markdown)
