"""Griffe extension: the reStructuredText bits of the project's docstrings, as Markdown.

The docstrings cite other objects with Sphinx roles (``:func:`convert```), show code after
``::`` or ``.. code-block:: yaml`` and lay out one table in RST's simple-table syntax. mkdocstrings
renders docstrings as Markdown, so this extension rewrites, on every docstring griffe loads:

* ``:role:`~a.b.c``` to ```c``` and ``:role:`a.b``` to ```a.b``` (inline code, no link: a link
  that griffe cannot resolve would be a warning, which ``mkdocs build --strict`` fails on);
* ``.. code-block:: LANG`` and a paragraph ending in ``::`` followed by an indented block to a
  fenced block (``LANG``, or ``python``);
* a simple table (rows between ``====  ====`` rules) to a fenced text block, as it is written.

The source files stay as they are.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

import griffe

ROLE = re.compile(r":(?:[a-z]+:)?[a-z]+:`~?([^`]+)`")
RULE_LINE = re.compile(r"^\s*=+(\s+=+)+\s*$")


def _role(match: re.Match[str]) -> str:
    target = match.group(1)
    if match.group(0).split("`", 1)[1].startswith("~"):
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


def _indented_block(lines: list[str], start: int) -> tuple[list[str], int]:
    """The indented block that starts after the blank line(s) at ``start``, and where it ends."""
    end = start
    while end < len(lines) and not lines[end].strip():
        end += 1
    body_start = end
    while end < len(lines) and (not lines[end].strip() or lines[end].startswith((" ", "\t"))):
        end += 1
    while end > body_start and not lines[end - 1].strip():
        end -= 1
    return lines[body_start:end], end


def _fence(block: list[str], lang: str) -> list[str]:
    return ["", f"```{lang}", *textwrap.dedent("\n".join(block)).split("\n"), "```", ""]


def to_markdown(text: str) -> str:
    """``text`` (a docstring) with its roles, literal blocks and simple tables as Markdown."""
    lines = ROLE.sub(_role, text).split("\n")
    out: list[str] = []
    fenced = False  # inside a Markdown fence already (or one written here): leave it alone
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("```") or fenced:
            fenced ^= line.lstrip().startswith("```")
            out.append(line)
            i += 1
            continue
        directive = re.match(r"^\s*\.\. code-block::\s*(\w*)\s*$", line)
        if directive:
            block, i = _indented_block(lines, i + 1)
            out += _fence(block, directive.group(1) or "text")
            continue
        if line.rstrip().endswith("::") and i + 1 < len(lines) and not lines[i + 1].strip():
            block, end = _indented_block(lines, i + 1)
            if block and block[0].startswith((" ", "\t")):
                text_part = line.rstrip()[:-2].rstrip()
                out.append(text_part + (":" if text_part else ""))
                out += _fence(block, "python")
                i = end
                continue
        if RULE_LINE.match(line):
            end = i + 1
            rules = 1
            while end < len(lines) and rules < 3:
                rules += bool(RULE_LINE.match(lines[end]))
                end += 1
            out += ["", "```text", *lines[i:end], "```", ""]
            i = end
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


class RstToMarkdown(griffe.Extension):
    """Rewrites each loaded docstring with :func:`to_markdown`."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj.docstring.value)

    def on_module(self, *, mod: griffe.Module, **kwargs: Any) -> None:
        self.on_object(obj=mod)
