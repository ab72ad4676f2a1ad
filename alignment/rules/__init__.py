"""The registry of learning rules. A new rule is one file plus one line in ``RULES``."""

from __future__ import annotations

from alignment.layers.feedback import set_rule_factory
from alignment.rules.base import Feedback, Rule, TwoStage
from alignment.rules.bp import BP
from alignment.rules.dfa import DFA
from alignment.rules.fa import FA
from alignment.rules.kp import KP
from alignment.rules.pfa import PFA, PFAO
from alignment.rules.sign import BRSF, FRSF, USF

RULES: dict[str, type[Rule]] = {
    "bp": BP,
    "fa": FA,
    "dfa": DFA,
    "usf": USF,
    "frsf": FRSF,
    "brsf": BRSF,
    "pfa": PFA,
    "pfa_o": PFAO,
    "kp": KP,
}


def make_rule(rule: str | Rule, **options: object) -> Rule:
    """A validated rule from its registry name and keyword options (or a Rule, returned as is)."""
    if isinstance(rule, Rule):
        if options:
            raise TypeError("options go with a rule name, not with a Rule instance")
        return rule
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; valid rules: {', '.join(RULES)}")
    cls = RULES[rule]
    unknown = sorted(set(options) - set(cls.option_names()))
    if unknown:
        valid = ", ".join(cls.option_names()) or "none"
        raise ValueError(
            f"rule {rule!r} has no option {', '.join(unknown)}; valid options: {valid}"
        )
    return cls(**options)


set_rule_factory(make_rule)


__all__ = ["BP", "BRSF", "DFA", "FA", "FRSF", "KP", "PFA", "PFAO", "RULES", "USF"]
__all__ += ["Feedback", "Rule", "TwoStage", "make_rule"]
