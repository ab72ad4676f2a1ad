"""Rule names: paper order, display labels, and which kind of alignment each rule's metric is.

``feedback_alignment`` is weight alignment for FA, sign symmetry and KP, path alignment for PFA
and PFA-o (spec §4), and the feedback-map vs mean-Jacobian angle for DFA (schema description).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

import xarray as xr

T = TypeVar("T", xr.Dataset, xr.DataArray)

RULE_ORDER = ("bp", "fa", "dfa", "usf", "frsf", "brsf", "pfa", "pfa_o", "kp")
"""Paper order (BP, FA, DFA, uSF, PFA, PFA-o), then the other registered rules."""

RULE_LABELS = {
    "bp": "BP",
    "fa": "FA",
    "dfa": "DFA",
    "usf": "uSF",
    "frsf": "frSF",
    "brsf": "brSF",
    "pfa": "PFA",
    "pfa_o": "PFA-o",
    "kp": "KP",
}

ALIGNMENT_KIND = {
    "bp": "",
    "fa": "weight",
    "usf": "weight",
    "frsf": "weight",
    "brsf": "weight",
    "kp": "weight",
    "pfa": "path",
    "pfa_o": "path",
    "dfa": "DFA",
}


def rule_label(rule: str) -> str:
    """Display label of a rule ('pfa_o' → 'PFA-o'); unknown rules are upper-cased."""
    return RULE_LABELS.get(rule, rule.upper().replace("_", "-"))


def alignment_kind(rule: str) -> str:
    """'weight', 'path', 'DFA' or '' (BP): what ``feedback_alignment`` measures for the rule."""
    return ALIGNMENT_KIND.get(rule, "feedback")


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
