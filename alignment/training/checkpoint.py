"""Atomic checkpoints, loaded with ``weights_only=True``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

CHECKPOINT = "checkpoint.pt"


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> None:
    """Write ``run_dir/checkpoint.pt`` atomically (temporary file, fsync, rename)."""
    path = run_dir / CHECKPOINT
    tmp = path.with_suffix(".pt.tmp")
    with open(tmp, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def load_checkpoint(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / CHECKPOINT
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)
