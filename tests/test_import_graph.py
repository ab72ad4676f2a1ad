"""The layers never import the rules (the rules import the layers): checked on the source, by ast.

Imports under ``if TYPE_CHECKING:`` are left out: they never run, so they make no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import alignment

PACKAGE = Path(alignment.__file__).parent


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def runtime_imports(path: Path) -> set[str]:
    """Every module a file imports at run time (any depth: functions and methods included)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return found


def test_the_checker_sees_imports_inside_functions(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import alignment.rules.base\n"
        "def f():\n    from alignment.rules import make_rule\n"
    )
    assert "alignment.rules" in runtime_imports(source)
    assert "alignment.rules.base" not in runtime_imports(source)


def test_layers_do_not_import_rules() -> None:
    offenders = {
        path.name: sorted(m for m in runtime_imports(path) if m.startswith("alignment.rules"))
        for path in sorted((PACKAGE / "layers").glob("*.py"))
    }
    assert {name: mods for name, mods in offenders.items() if mods} == {}


def test_rules_may_import_layers_but_not_convert() -> None:
    for path in sorted((PACKAGE / "rules").glob("*.py")):
        assert not {m for m in runtime_imports(path) if m.startswith("alignment.convert")}
