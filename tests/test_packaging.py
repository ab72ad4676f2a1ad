"""Packaging: every third-party import of the package is a declared dependency (and every
declared dependency is imported), the optional extras are optional (``import alignment`` and
every module but the extra's own work without them, and a feature that needs one says so in
one line), the one version, and the namespace (``alignment.analyses`` / ``alignment.figures``
neither shadow nor are shadowed by a user's own ``figures`` or ``analyses``)."""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import alignment
from alignment.cli import main
from alignment.extras import DISTRIBUTION, EXTRAS, install_command

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def package_files() -> list[Path]:
    """Every .py file the wheel installs: alignment/, with analyses/ and figures/ through its
    symlinks."""
    found = []
    for folder, _, files in os.walk(ROOT / "alignment", followlinks=True):
        found += [Path(folder) / name for name in files if name.endswith(".py")]
    return sorted(found)


def third_party_imports(path: Path) -> set[str]:
    """The top-level names of the absolute imports in ``path`` that are neither the standard
    library nor ``alignment``."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.partition(".")[0])
    return names - set(sys.stdlib_module_names) - {"alignment"}


def requirements(extra: str | None = None) -> dict[str, Requirement]:
    """The declared requirements (``extra=None``: the core ones), by canonical name; the
    distribution's own name (``dev`` pulls in the other extras) left out."""
    listed = (
        PYPROJECT["dependencies"] if extra is None else PYPROJECT["optional-dependencies"][extra]
    )
    parsed = [Requirement(text) for text in listed]
    return {canonicalize_name(r.name): r for r in parsed if r.name != DISTRIBUTION}


@functools.cache
def installed_modules() -> dict[str, list[str]]:
    """Top-level module → the installed distributions that provide it."""
    return importlib.metadata.packages_distributions()


def distribution_of(module: str) -> str:
    """The canonical name of the installed distribution that provides top-level ``module``."""
    found = installed_modules().get(module)
    assert found, f"no installed distribution provides the module {module!r}"
    return canonicalize_name(found[0])


def test_the_package_files_include_analyses_and_figures() -> None:
    names = {path.relative_to(ROOT).as_posix() for path in package_files()}
    assert {"alignment/analyses/__init__.py", "alignment/figures/build.py"} <= names


def test_every_import_is_a_declared_dependency_and_every_dependency_is_imported() -> None:
    declared = set(requirements()) | {d for extra in EXTRAS for d in requirements(extra)}
    imported: dict[str, set[str]] = {}
    for path in package_files():
        for module in third_party_imports(path):
            imported.setdefault(module, set()).add(path.relative_to(ROOT).as_posix())
    undeclared = {
        module: sorted(where)
        for module, where in imported.items()
        if module in ("analyses", "figures")  # the generic names: alignment.analyses, .figures
        or distribution_of(module) not in declared
    }
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
    unused = declared - {distribution_of(module) for module in imported}
    assert not unused, f"declared in pyproject.toml but never imported: {sorted(unused)}"


def test_the_extras_of_pyproject_are_those_of_alignment_extras() -> None:
    for extra, modules in EXTRAS.items():
        assert set(requirements(extra)) == {distribution_of(m) for m in modules}, extra
    assert not set(requirements()) & {d for extra in EXTRAS for d in requirements(extra)}
    dev = [Requirement(text) for text in PYPROJECT["optional-dependencies"]["dev"]]
    (itself,) = [r for r in dev if r.name == DISTRIBUTION]
    assert itself.extras == set(EXTRAS) | {"docs"}, "dev installs every extra and the docs tools"


def test_no_exact_pins_only_lower_bounds() -> None:
    for extra in (None, *PYPROJECT["optional-dependencies"]):
        for name, requirement in requirements(extra).items():
            operators = {spec.operator for spec in requirement.specifier}
            assert operators == {">="}, f"{name}: {requirement} (a range with a lower bound)"


def test_the_version_is_defined_once(capsys: pytest.CaptureFixture[str]) -> None:
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in PYPROJECT and PYPROJECT["dynamic"] == ["version"]
    assert build["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "alignment.__version__"}
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"alignment {alignment.__version__}\n"


# ------------------------------------------------ a process without the extras, a user's modules
PROBE = textwrap.dedent(
    """
    import importlib, json, pkgutil, sys, io, contextlib
    from importlib.abc import MetaPathFinder

    class Blocked(MetaPathFinder):  # as if the extras were not installed
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in {blocked}:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)

    sys.meta_path.insert(0, Blocked())
    import figures, analyses  # the user's own, first on sys.path
    import alignment
    from alignment.cli import main

    failed = {{}}
    for module in pkgutil.walk_packages(alignment.__path__, "alignment."):
        if module.name != "alignment.__main__":
            try:
                importlib.import_module(module.name)
            except Exception as error:
                failed[module.name] = f"{{type(error).__name__}}: {{error}}"

    def cli(argv):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
        return code, err.getvalue()

    print(json.dumps({{
        "failed": failed,
        "slurm": cli(["sweep", sys.argv[1], "--executor", "slurm", "--dry-run"]),
        "mnist5k": cli(["train", "demo/pfa", "--set", "epochs=1", "--out", sys.argv[2]]),
        "user_modules": [figures.WHOSE, analyses.WHOSE],
        "ours": [alignment.figures.__file__, alignment.analyses.__file__],
        "generic_names_loaded": sorted(
            m for m in sys.modules if m.partition(".")[0] in ("figures", "analyses")
            and not getattr(sys.modules[m], "WHOSE", None)
        ),
    }}))
    """
)


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One subprocess with the extras' modules blocked and a user's own ``figures.py`` and
    ``analyses/`` first on sys.path: imports every module of the package, then runs the two
    CLI commands that need an extra."""
    tmp = tmp_path_factory.mktemp("user")
    (tmp / "figures.py").write_text('WHOSE = "user"\n')
    (tmp / "analyses").mkdir()
    (tmp / "analyses" / "__init__.py").write_text('WHOSE = "user"\n')
    spec = tmp / "sweep.yaml"
    spec.write_text("name: tiny\nconfig: demo/bp\naxes: {seed: [0]}\nslurm: {partition: gpu}\n")
    blocked = {m for modules in EXTRAS.values() for m in modules}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp), str(ROOT)])}
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(blocked=sorted(blocked)), str(spec), str(tmp / "o")],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_every_module_imports_without_the_extras_but_the_extras_own(probe: dict) -> None:
    slurm = f"the Slurm executor needs the optional extra: {install_command('cluster')}"
    lightning = (
        "alignment.integrations.lightning needs the optional extra: "
        f"{install_command('lightning')}"
    )
    assert probe["failed"] == {
        "alignment.sweeps.slurm": f"MissingExtraError: {slurm}",
        "alignment.integrations.lightning": f"MissingExtraError: {lightning}",
    }


def test_a_missing_extra_is_one_line_naming_it_and_the_pip_command(probe: dict) -> None:
    assert probe["slurm"] == [
        2,
        "alignment: error: the Slurm executor needs the optional extra: "
        'pip install "feedback-alignment[cluster]"\n',
    ]
    assert probe["mnist5k"] == [
        2,
        "alignment: error: the embedded MNIST-5k data set (data.name: mnist5k) needs the "
        'optional extra: pip install "feedback-alignment[demo]"\n',
    ]


def test_a_users_own_figures_and_analyses_stay_theirs(probe: dict) -> None:
    assert probe["user_modules"] == ["user", "user"]
    assert probe["ours"] == [
        str(ROOT / "alignment" / "figures" / "__init__.py"),
        str(ROOT / "alignment" / "analyses" / "__init__.py"),
    ]
    assert probe["generic_names_loaded"] == []  # nothing of ours under the generic names


def test_static_doc_tools_find_analyses_and_figures_inside_the_package() -> None:
    """griffe (what mkdocstrings reads the docstrings with) finds them by path, importing
    nothing."""
    griffe = pytest.importorskip("griffe")
    package = griffe.load("alignment", search_paths=[ROOT], allow_inspection=False)
    assert package["analyses.accuracy_table"].path == "alignment.analyses.accuracy_table"
    assert package["figures.build"].filepath == ROOT / "alignment" / "figures" / "build.py"
