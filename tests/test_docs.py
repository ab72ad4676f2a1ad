"""The documentation site's generated parts (docs/hooks/generate.py) and its hand-written claims.

``make docs`` (a step of ``make test``) builds the whole site in strict mode; these tests check
what the build cannot: that the generated pages list everything the code defines, that the
examples they show run, and that every test the theory page names exists.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
HOOKS = ROOT / "docs" / "hooks"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"docs_hooks_{name}", HOOKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    return _load("generate")


def _row(markdown: str, name: str) -> str:
    """The table row of ``markdown`` whose first cell is ``name`` in backticks."""
    rows = [line for line in markdown.splitlines() if line.startswith(f"| `{name}` |")]
    assert len(rows) == 1, f"{name!r}: {len(rows)} rows in the generated page"
    return rows[0]


def test_recording_page_lists_every_schema_entry(gen: ModuleType) -> None:
    from alignment.recording import schema

    page = gen.schema_markdown()
    for name, var in schema.VARIABLES.items():
        row = _row(page, name)
        for part in (var.long_name, var.schedule, *var.dims):
            assert part in row, f"{name}: {part!r} missing from {row!r}"
        assert " ".join(var.description.split()).replace("|", "\\|") in row
        assert (f"`{var.units}`" if var.units else "(none)") in row
    for name, var in schema.LAYER_COORDS.items():
        assert var.description in _row(page, name)
    for name, quantity in schema.RAW_QUANTITIES.items():
        assert quantity.description in _row(page, name)
    for attr in schema.REQUIRED_ATTRS:
        _row(page, attr)
    for dim in {d for var in schema.VARIABLES.values() for d in var.dims}:
        _row(page, dim)
    assert "`probe_input`" in page and f"`{schema.USER_PREFIX}<name>`" in page


def test_an_undocumented_schema_dim_stops_the_build(
    gen: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(gen.DIM_DOCS, "sv")
    with pytest.raises(ValueError, match="sv"):
        gen.schema_markdown()


def test_rule_gallery_lists_every_rule_with_its_options(gen: ModuleType) -> None:
    import dataclasses

    from alignment import RULES

    page = gen.rules_markdown()
    sections = re.split(r"^## ", page, flags=re.MULTILINE)[1:]
    assert [s.split("`")[1] for s in sections] == list(RULES)
    for section, (name, cls) in zip(sections, RULES.items(), strict=True):
        assert cls.equation in section
        for field in dataclasses.fields(cls):
            row = _row(section, field.name)
            assert f"`{field.default!r}`" in row, (name, field.name)
        assert f'alignment.convert(model, "{name}"' in section


def test_an_undocumented_rule_option_stops_the_build(
    gen: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(gen.OPTION_DOCS, "k")
    with pytest.raises(ValueError, match="OPTION_DOCS"):
        gen.rules_markdown()


@pytest.mark.parametrize("rule", ["bp", "fa", "dfa", "usf", "frsf", "brsf", "pfa", "pfa_o", "kp"])
def test_rule_gallery_examples_run(gen: ModuleType, rule: str) -> None:
    import dataclasses

    import torch

    import alignment
    from alignment import RULES

    defaults = {f.name: f.default for f in dataclasses.fields(RULES[rule])}
    defaults.pop("out_features", None)
    namespace: dict = {}
    torch.manual_seed(0)
    exec(gen.rule_example(rule, defaults), namespace)
    layers = [m for m in namespace["net"].modules() if isinstance(m, alignment.FeedbackLayer)]
    assert len(layers) == 3
    assert all(m.rule.name == rule and m.weight.grad is not None for m in layers)


def _test_names() -> set[str]:
    names = set()
    for file in (ROOT / "tests").glob("test_*.py"):
        tree = ast.parse(file.read_text(encoding="utf-8"))
        names |= {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    return names


def test_every_test_the_theory_page_names_exists() -> None:
    page = (ROOT / "docs" / "theory.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`(test_\w+\*?)`", page))
    assert len(named) > 40
    existing = _test_names()
    missing = sorted(n for n in named if not fnmatch.filter(existing, n))
    assert not missing, f"docs/theory.md names tests that do not exist: {missing}"


def test_theory_test_list_is_complete(gen: ModuleType) -> None:
    listed = {name for _, name, _ in gen.theory_tests()}
    for file in gen.THEORY_TEST_FILES:
        source = (ROOT / file).read_text(encoding="utf-8")
        assert set(re.findall(r"^def (test_\w+)", source, re.MULTILINE)) <= listed


def test_generated_tables_read_the_package_folders(gen: ModuleType) -> None:
    from alignment.config import CONFIG_DIR, bundled_configs
    from alignment.sweeps.spec import SPEC_DIR

    assert gen.CONFIG_DIR == CONFIG_DIR and gen.SPEC_DIR == SPEC_DIR
    page = gen.configs_markdown()
    for name in bundled_configs():
        if "/sparse/" not in name or name.endswith("_1"):
            _row(page, name)
    sweeps = gen.sweeps_markdown()
    for spec in SPEC_DIR.glob("*.yaml"):
        _row(sweeps, spec.stem)


def test_markers_expand_and_unknown_ones_fail(gen: ModuleType) -> None:
    text = gen.expand("intro\n<!-- readme: own-model-example -->\n")
    assert "alignment.Recorder(" in text and "<!--" not in text
    with pytest.raises(ValueError, match="unknown marker"):
        gen.expand("<!-- generate: nothing -->")
    with pytest.raises(ValueError, match=r"README\.md has no block"):
        gen.readme_block("no-such-block")


def test_gallery_shows_every_committed_figure(gen: ModuleType) -> None:
    page = gen.gallery_markdown()
    for png in (ROOT / "docs").glob("*.png"):
        assert f"]({png.name})" in page


def test_docstring_rst_becomes_markdown() -> None:
    pytest.importorskip("griffe")
    rst = _load("griffe_rst")
    text = "See :func:`~alignment.theory.expected_angle` and :mod:`analyses`::\n\n    x = 1\n"
    converted = rst.to_markdown(text)
    assert converted.strip() == "See `expected_angle` and `analyses`:\n\n```python\nx = 1\n```"
    table = "head\n\n===  ===\na    b\n===  ===\nc    d\n===  ===\n\ntail"
    assert "```text\n===  ===" in rst.to_markdown(table)
    assert rst.to_markdown(rst.to_markdown(table)) == rst.to_markdown(table)


def test_make_docs_is_strict_and_not_quiet() -> None:
    """``mkdocs build --quiet`` drops warnings before ``--strict`` counts them (a broken link then
    builds with status 0), so ``make docs`` must be strict and must not be quiet."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = makefile.split("\ndocs:", 1)[1].split("\n\n", 1)[0]
    assert "mkdocs build --strict" in recipe and "--quiet" not in recipe and " -q" not in recipe
    assert re.search(r"^test:.*\n(\t.*\n)*\t\$\(MAKE\) docs$", makefile, re.MULTILINE)
