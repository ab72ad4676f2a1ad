"""The optional extras of the ``feedback-alignment`` distribution, and the one-line error a
feature gives when the extra it needs is not installed.

``import alignment`` needs none of them: each is imported only by the feature that uses it,
inside :func:`needs_extra`, which turns the ImportError into :class:`MissingExtraError`
(``the Slurm executor needs the optional extra: pip install "feedback-alignment[cluster]"``).
The CLI prints that message as its ``alignment: error: ...`` line.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager

DISTRIBUTION = "feedback-alignment"
"""The name on the package index (the import name is ``alignment``)."""

EXTRAS: dict[str, tuple[str, ...]] = {
    "cluster": ("submitit",),
    "demo": ("mlxtend",),
    "tensorboard": ("tensorboard",),
    "lightning": ("lightning",),
}
"""Extra → the top-level modules it provides (pyproject.toml's optional-dependencies)."""


class MissingExtraError(ImportError):
    """A feature needs an optional extra that is not installed; the message names the extra
    and the pip command that installs it."""


def install_command(extra: str) -> str:
    """``pip install "feedback-alignment[<extra>]"``."""
    return f'pip install "{DISTRIBUTION}[{extra}]"'


@contextmanager
def needs_extra(extra: str, feature: str) -> Iterator[None]:
    """Imports in the block that fail for lack of a module of ``extra`` raise
    :class:`MissingExtraError` ``"<feature> needs the optional extra: pip install ..."``; any
    other ImportError passes unchanged."""
    modules = EXTRAS[extra]
    try:
        yield
    except MissingExtraError:
        raise
    except ImportError as error:
        missing = (error.name or "").partition(".")[0]
        if missing not in modules:
            raise
        raise MissingExtraError(
            f"{feature} needs the optional extra: {install_command(extra)}", name=missing
        ) from error


def require(extra: str, feature: str) -> None:
    """Raise :class:`MissingExtraError` now if a module of ``extra`` cannot be imported (for a
    feature that would otherwise fail later, e.g. in a worker process)."""
    with needs_extra(extra, feature):
        for module in EXTRAS[extra]:
            importlib.import_module(module)
