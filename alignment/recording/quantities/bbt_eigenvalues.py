"""bbt_eigenvalues (layer × eig), once per run: the eigenvalues of B·Bᵀ of every PFA layer.

B is fixed, so its spectrum is a property of the run: Marchenko–Pastur with mean 1 and variance
1/k for a dense random B, exactly 1 for PFA-o (alignment.theory, property 3).
Ascending, with B's sparsity mask applied, NaN-padded to the widest layer; NaN rows for layers
that are not PFA.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from alignment.recording.quantities.common import Quantity, stack_rows
from alignment.rules import PFA
from alignment.rules.base import masked

if TYPE_CHECKING:
    from alignment.recording.context import Network, StepContext


class BBTEigenvalues(Quantity):
    variables = ("bbt_eigenvalues",)
    when = "static"

    def applies(self, net: Network) -> bool:
        return any(isinstance(layer.rule, PFA) for layer in net.layers.values())

    def compute(self, ctx: StepContext) -> dict[str, np.ndarray]:
        rows = {}
        for name, layer in ctx.net.layers.items():
            if isinstance(layer.rule, PFA):
                b = masked(layer, "B").detach().to(torch.float64)
                rows[name] = torch.linalg.eigvalsh(b @ b.T).cpu().numpy()
        width = max(len(row) for row in rows.values())
        return {"bbt_eigenvalues": stack_rows(ctx.net, rows, width)}


QUANTITY = BBTEigenvalues()
