"""Reading pickles that may come from anyone, without running their code.

A pickle is a small program: its ``GLOBAL``/``STACK_GLOBAL`` opcodes import any callable by name
and ``REDUCE`` calls it, so ``pickle.load`` of a crafted file runs e.g. ``os.system``. The
unpickler here resolves globals only from an explicit table of admitted ``(module, name)`` pairs
and refuses every other global — before anything is called, so nothing the file names runs. Every
other way a pickle reaches code (extension codes, persistent ids) also goes through the same
check or is refused by the standard unpickler. This is the approach of the Python documentation's
"Restricting Globals" (https://docs.python.org/3/library/pickle.html#restricting-globals).

:data:`NUMPY_ARRAY_GLOBALS` are the globals a numpy array pickled with protocol ≤ 4 references
(the spelling of numpy 1.x, ``numpy.core.multiarray``, as in the CIFAR-10 python files, and the
spelling of numpy 2.x, ``numpy._core.multiarray``): the array reconstructor, ``numpy.ndarray``
and ``numpy.dtype``. None of them can reach other code: ``_reconstruct`` only builds an
``ndarray`` (sub)class it is handed — and only ``numpy.ndarray`` itself can be handed to it — and
``dtype`` only parses type descriptions.
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Mapping
from typing import Any

import numpy as np

_reconstruct = np.empty(0).__reduce__()[0]  # numpy's array reconstructor (public path)

NUMPY_ARRAY_GLOBALS: Mapping[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
"""What pickled numpy arrays (protocol ≤ 4, numpy 1.x and 2.x) reference: nothing else."""


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle referenced a global outside the admitted table; nothing it names was called.

    ``path`` is the file and ``name`` the refused global as ``module.name``.
    """

    def __init__(self, path: str, name: str) -> None:
        super().__init__(
            f"{path} references the global {name}, which a plain data file never contains; "
            "it was refused before anything in the file ran"
        )
        self.path = path
        self.name = name

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.name))


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` admits only the globals in ``admitted``."""

    def __init__(
        self,
        file: io.BufferedIOBase,
        admitted: Mapping[tuple[str, str], Any],
        *,
        path: str = "<pickle>",
        encoding: str = "ASCII",
    ) -> None:
        super().__init__(file, encoding=encoding)
        self._admitted = admitted
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._admitted[(module, name)]
        except (KeyError, TypeError):
            raise UnsafePickleError(self._path, f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError(f"{self._path} uses a persistent id, which is not admitted")


def restricted_load(
    path: str | os.PathLike[str],
    admitted: Mapping[tuple[str, str], Any] = NUMPY_ARRAY_GLOBALS,
    *,
    encoding: str = "ASCII",
) -> Any:
    """Unpickle the file at ``path``, resolving globals only from ``admitted``.

    Plain containers and scalars (dict, list, tuple, set, bytes, str, int, float, bool, None) need
    no global and always load; ``encoding`` decodes Python 2 ``str`` objects as
    :func:`pickle.load` does (``"latin1"`` for numpy arrays written by Python 2). Raises
    :class:`UnsafePickleError` naming the file and the global for anything else.
    """
    with open(path, "rb") as f:
        return RestrictedUnpickler(f, admitted, path=str(path), encoding=encoding).load()
