"""Hypothesis profiles and shared fixtures.

Profiles (select with the environment variable ``HYPOTHESIS_PROFILE``; default ``ci``):

* ``dev``: a few examples per property, for quick edits;
* ``ci``: derandomised (the same examples on every run), a moderate number of examples;
* ``thorough``: many examples, for a long run before a release.

Tests marked ``slow`` are left out of the default run (as the marker in pyproject.toml says);
select them with ``-m slow`` (or any ``-m`` expression that names them).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch
from hypothesis import HealthCheck, settings

_COMMON = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}

settings.register_profile("dev", max_examples=5, **_COMMON)
settings.register_profile("ci", max_examples=100, derandomize=True, print_blob=True, **_COMMON)
settings.register_profile("thorough", max_examples=500, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="module")
def float64() -> Iterator[None]:
    """Run a module in float64 (default dtype), restoring the previous default afterwards."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect ``slow`` tests unless a ``-m`` marker expression was given."""
    if config.getoption("markexpr"):
        return
    slow = [item for item in items if item.get_closest_marker("slow") is not None]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if item.get_closest_marker("slow") is None]


@pytest.fixture(autouse=True)
def _restore_torch_threads() -> Iterator[None]:
    """Every test starts with the session's torch thread count: a test that changes it must not
    change the float results of later tests (bitwise comparisons with subprocesses)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
