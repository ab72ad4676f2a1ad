"""Training: the paper's optimiser and schedules, resumable runs, divergence checks."""

from alignment.training.trainer import (
    DivergenceError,
    RunResult,
    resume,
    run_dirs,
    train,
    train_run,
)

__all__ = ["DivergenceError", "RunResult", "resume", "run_dirs", "train", "train_run"]
