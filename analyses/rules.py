"""Rule names: paper order, display labels, colours, and which kind of alignment each rule's
metric is, all read from the rule classes (:data:`alignment.rules.RULES`: class attributes
``label``, ``color``, ``alignment_kind``), so a new rule brings its own.

``feedback_alignment`` is weight alignment for FA, sign symmetry and KP, path alignment for PFA
and PFA-o (arXiv 2405.20594), and the feedback-map vs mean-Jacobian angle for DFA.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

import xarray as xr

from alignment.rules import RULES

T = TypeVar("T", xr.Dataset, xr.DataArray)

RULE_ORDER = tuple(RULES)
"""Paper order (BP, FA, DFA, uSF, …, PFA, PFA-o, KP): the registry's order."""


def rule_label(rule: str) -> str:
    """Display label of a rule ('pfa_o' → 'PFA-o'); unknown rules are upper-cased."""
    cls = RULES.get(str(rule))
    label = getattr(cls, "label", "") if cls is not None else ""
    return label or str(rule).upper().replace("_", "-")


def rule_color(rule: str) -> str:
    """The rule class's ``color`` ('' for unknown rules or rules without one)."""
    cls = RULES.get(str(rule))
    return getattr(cls, "color", "") if cls is not None else ""


def alignment_kind(rule: str) -> str:
    """'weight', 'path', 'DFA' or '' (BP): what ``feedback_alignment`` measures for the rule."""
    cls = RULES.get(str(rule))
    return getattr(cls, "alignment_kind", "feedback") if cls is not None else "feedback"


def sorted_rules(rules: Iterable[str]) -> list[str]:
    """Rules in paper order; unknown rules after the known ones, alphabetically."""
    rules = list(dict.fromkeys(str(r) for r in rules))
    known = [r for r in RULE_ORDER if r in rules]
    return known + sorted(r for r in rules if r not in RULE_ORDER)


def order_rules(obj: T) -> T:
    """``obj`` with its ``rule`` dim in paper order (unchanged if it has no ``rule`` dim)."""
    if "rule" not in obj.dims:
        return obj
    return obj.sel(rule=sorted_rules(obj["rule"].values))
