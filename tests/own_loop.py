"""Records of a user's own training loop (no trainer, no ``config.yaml``) for the figure tests: a
small convnet that is not in :mod:`alignment.models`, converted to several rules, trained in a
plain loop with :class:`alignment.Recorder`, two seeds each."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import alignment
from alignment.recording import schedules

OWN_RULES = ("bp", "fa", "dfa", "pfa")


class SmallConvNet(nn.Module):
    """conv(1→4) + BN + pool, conv(4→6) + pool, fc 24→16, fc 16→10, on 8×8 images."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(4, 6, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(24, 16), nn.ReLU(), nn.Linear(16, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def own_loop_run(run_dir: Path, rule: str, seed: int, *, steps: int = 8, **options: object) -> Path:
    """Train :class:`SmallConvNet` under ``rule`` for ``steps`` SGD steps with coupled weight
    decay on random 8×8 data, recording every step (Jacobians every 4), and log a test accuracy
    twice with ``rec.log``."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(1000 + seed)
    x = torch.randn(steps * 8, 1, 8, 8, generator=generator)
    y = torch.randint(0, 10, (steps * 8,), generator=generator)
    model = alignment.convert(SmallConvNet(), rule, **options)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=0.05)
    with alignment.Recorder(
        model,
        run_dir,
        optimizer=opt,
        probe=(x[:4], y[:4]),
        seed=seed,
        schedule=schedules.every(1),
        jacobian_schedule=schedules.every(4),
        tags={"net": "small_conv"},
    ) as rec:
        for step in range(steps):
            xb, yb = x[8 * step : 8 * step + 8], y[8 * step : 8 * step + 8]
            rec.step(xb, yb)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step in (steps // 2 - 1, steps - 1):
                with torch.no_grad():
                    accuracy = (model(x).argmax(1) == y).float().mean().item()
                rec.log(test_accuracy=accuracy)
    return Path(run_dir)


def own_loop_runs(
    root: Path, rules: Sequence[str] = OWN_RULES, seeds: Sequence[int] = (0, 1)
) -> list[Path]:
    """:func:`own_loop_run` for every rule and seed, in ``root/<rule>/seed<N>``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return [
            own_loop_run(
                root / rule / f"seed{seed}", rule, seed, **({"k": 2} if rule == "pfa" else {})
            )
            for rule in rules
            for seed in seeds
        ]
    finally:
        torch.set_num_threads(threads)
