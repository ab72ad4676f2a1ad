"""What a rule hands a layer's backward: the feedback kinds, and how a layer finds its rule.

The layers depend on these types only, never on :mod:`alignment.rules` (which imports the layers):
a rule is anything with the methods of :class:`alignment.rules.Rule`, and a rule given by name is
built by the factory that :mod:`alignment.rules` registers with :func:`set_rule_factory` when it
is imported (``import alignment`` does that first).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from torch import Tensor


class TwoStage(NamedTuple):
    """Feedback through explicit feedback neurons: e_in = (δB)R (PFA's two-stage path)."""

    B: Tensor
    R: Tensor


class Direct(NamedTuple):
    """Feedback straight from the network output: e_in = e_out D (DFA).

    The layer's Function returns, besides y, a *carrier* whose gradient is e_out (shape: the
    layer's leading dims × C, see :mod:`alignment.layers.direct`); ``sink`` hands the carrier to
    whoever connects it to the network output.
    """

    D: Tensor
    sink: Callable[[Tensor], None]


Feedback = Tensor | TwoStage | Direct | None
"""What a backward uses: a tensor F of W's shape (e_in = δF), a :class:`TwoStage` pair, a
:class:`Direct` projection of the output error, or None (the layer sends no error to its input)."""

_RULE_FACTORY: list[Callable[..., Any]] = []


def set_rule_factory(factory: Callable[..., Any]) -> None:
    """Register ``make_rule(name, **options)`` (called by :mod:`alignment.rules` on import)."""
    _RULE_FACTORY[:] = [factory]


def resolve_rule(rule: Any, **options: object) -> Any:
    """The rule object for ``rule`` (a name or a Rule) and its options, via the registry."""
    if not _RULE_FACTORY:
        raise RuntimeError("no rule registry: import alignment (or alignment.rules) first")
    return _RULE_FACTORY[0](rule, **options)
