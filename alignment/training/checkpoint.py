"""Atomic checkpoints, loaded with ``weights_only=True``.

A write goes to ``checkpoint.pt.tmp`` (fsync, then rename), so a crash leaves the previous
checkpoint whole; a failed write (e.g. a full disk) removes the temporary file and raises the
:class:`OSError` that caused it, naming the file. A checkpoint that cannot be read (empty,
truncated, not a checkpoint) raises :class:`CheckpointError`, naming the file and the fix.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import torch

CHECKPOINT = "checkpoint.pt"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the run; the message names the file."""


def checkpoint_fix(path: Path) -> str:
    """What to do about a damaged or mismatched checkpoint."""
    return (
        f"delete {path} to restart the run from step 0 (its record is rewritten), or restore "
        "the file from a copy"
    )


def os_error_cause(error: BaseException) -> OSError | None:
    """The first :class:`OSError` with an errno in ``error``'s chain (torch, zarr and others
    wrap the error a full disk or a read-only folder raises)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError) and current.errno is not None:
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> None:
    """Write ``run_dir/checkpoint.pt`` atomically (temporary file, fsync, rename)."""
    path = run_dir / CHECKPOINT
    tmp = path.with_suffix(".pt.tmp")
    try:
        with open(tmp, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        cause = os_error_cause(error)
        if cause is None:
            raise
        raise OSError(cause.errno, os.strerror(cause.errno), str(tmp)) from None


def load_checkpoint(run_dir: Path) -> dict[str, Any] | None:
    """``run_dir``'s checkpoint (None if it has none)."""
    path = run_dir / CHECKPOINT
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # empty, truncated or random bytes: EOFError, RuntimeError, …
        if isinstance(error, OSError) and error.errno is not None:
            raise  # e.g. no permission to read it: the file itself may be fine
        reason = (str(error).splitlines() or [""])[0]
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({type(error).__name__}: {reason}): "
            f"{checkpoint_fix(path)}"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{path} holds a {type(state).__name__}, not a checkpoint: {checkpoint_fix(path)}"
        )
    return state


KEYS = ("model", "optimizer", "torch_rng", "python_rng", "recorder", "step", "accuracies")


def check_checkpoint(
    state: dict[str, Any],
    path: Path,
    *,
    model: dict[str, torch.Tensor],
    config: dict[str, Any],
    rule: str,
    total: int,
    per_epoch: int,
) -> None:
    """Raise :class:`CheckpointError` unless ``state`` (read from ``path``) continues this run:
    its step lies in ``[0, total]``, its model state has ``model``'s keys and shapes, and, where
    the checkpoint names them (checkpoints written since they do), its rule is ``rule`` and its
    config is ``config`` (fields in :data:`~alignment.training.runconfig.NON_IDENTITY` aside)."""
    from alignment.training.runconfig import ABSENT, describe, differences

    fix = checkpoint_fix(path)
    missing = [key for key in KEYS if key not in state]
    if missing:
        raise CheckpointError(
            f"{path} is not a checkpoint of a run (no {', '.join(missing)}): {fix}"
        )
    step = state["step"]
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= total:
        raise CheckpointError(
            f"{path} is at step {step!r}, outside this run's steps 0..{total} "
            f"({total // max(per_epoch, 1)} epochs of {per_epoch}): {fix}"
        )
    if "rule" in state and state["rule"] != rule:
        raise CheckpointError(
            f"{path} was written under rule {state['rule']!r}, the run's config trains "
            f"{rule!r}: {fix}"
        )
    if isinstance(state.get("config"), dict):
        # A field the checkpoint lacks is one added to the config since it was written.
        diffs = [d for d in differences(state["config"], config) if d[1] is not ABSENT]
        if diffs:
            raise CheckpointError(
                f"{path} was written under another config: "
                f"{describe(diffs, 'in the checkpoint', 'in the run config')}: {fix}"
            )
    _check_model(state["model"], model, path)
    accuracies, epochs_begun = state["accuracies"], -(-step // max(per_epoch, 1))
    if not isinstance(accuracies, list) or len(accuracies) != epochs_begun:
        raise CheckpointError(
            f"{path} holds {len(accuracies) if isinstance(accuracies, list) else 'no'} test "
            f"accuracies at step {step}, which begins epoch {epochs_begun}: {fix}"
        )
    recorder = state["recorder"]
    if not isinstance(recorder, dict) or recorder.get("step") != step:
        raise CheckpointError(f"{path}: its recorder state is not at step {step}: {fix}")


def _check_model(theirs: Any, ours: dict[str, torch.Tensor], path: Path) -> None:
    fix = checkpoint_fix(path)
    if not isinstance(theirs, dict):
        raise CheckpointError(f"{path} holds no model state: {fix}")
    missing = sorted(ours.keys() - theirs.keys())
    extra = sorted(theirs.keys() - ours.keys())
    if missing or extra:
        parts = [
            f"lacks {', '.join(missing[:5])}" if missing else "",
            f"has {', '.join(extra[:5])} the model lacks" if extra else "",
        ]
        raise CheckpointError(
            f"{path} is of another model or rule ({'; '.join(p for p in parts if p)}): {fix}"
        )
    for name, tensor in ours.items():
        other = theirs[name]
        shape = tuple(getattr(other, "shape", ()))
        if not isinstance(other, torch.Tensor) or shape != tuple(tensor.shape):
            raise CheckpointError(
                f"{path}: {name} has shape {shape}, the model's is {tuple(tensor.shape)}: {fix}"
            )
