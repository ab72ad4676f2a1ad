"""The ``alignment`` command line: train, resume, info, configs, sweep (``alignment --help``)."""

from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path

from alignment import __version__
from alignment.config import ConfigError, bundled_configs, load_config
from alignment.extras import MissingExtraError


def _train(args: argparse.Namespace) -> int:
    from alignment.training import train
    from alignment.training.distributed import shutdown, world_from_env

    config = load_config(args.config, args.set)
    out = Path(args.out) if args.out else Path("out") / config.name
    try:
        results = train(config, out, seeds=args.seeds, device=args.device, quiet=args.quiet)
    finally:
        shutdown()
    if world_from_env().is_main:  # under torchrun, rank 0 reports
        for result in results:
            _print_info(result.run_dir)
    return 0


def _resume(args: argparse.Namespace) -> int:
    from alignment.training import resume
    from alignment.training.distributed import shutdown, world_from_env
    from alignment.training.trainer import DONE

    # Under torchrun every rank must take the same path, so the DONE check is resume()'s
    # (under the run lock, rank 0's answer broadcast), not a look at the folder here.
    try:
        result = resume(Path(args.run_dir), device=args.device, quiet=args.quiet)
    finally:
        shutdown()
    if world_from_env().is_main:
        if result.already_finished:
            print(f"{args.run_dir} is already finished ({DONE}); nothing to resume")
        _print_info(result.run_dir)
    return 0


def _run_dirs(path: Path) -> list[Path]:
    from alignment.summary import run_dirs

    return run_dirs(path)


def _print_info(run_dir: Path) -> None:
    from alignment.summary import run_summary

    print(run_summary(run_dir))


def _info(args: argparse.Namespace) -> int:
    for run_dir in _run_dirs(Path(args.run_dir)):
        _print_info(run_dir)
    return 0


def _configs(args: argparse.Namespace) -> int:
    for name, path in bundled_configs().items():
        first = path.read_text().splitlines()[0].lstrip("# ").strip()
        print(f"{name:<32} {first}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alignment",
        description="Learning rules without weight symmetry: train, record and inspect runs.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a config (a YAML file or a bundled name)")
    train.add_argument("config", help="YAML file, or a bundled config name (alignment configs)")
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set optim.lr=0.1 (repeatable)",
    )
    train.add_argument(
        "--out", help="output directory (default out/<config name>); runs go to OUT/seed<N>"
    )
    train.add_argument("--seeds", type=int, nargs="+", help="seeds (default: the config's)")
    train.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default: the config's")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=_train)

    resume = sub.add_parser("resume", help="continue an interrupted run from its checkpoint")
    resume.add_argument("run_dir")
    resume.add_argument("--device", choices=["auto", "cpu", "cuda"])
    resume.add_argument("--quiet", action="store_true")
    resume.set_defaults(func=_resume)

    info = sub.add_parser(
        "info",
        help="state (running, interrupted, finished), accuracy and alignment of a run, or of "
        "every run below a folder (trainer runs and own-loop records)",
    )
    info.add_argument("run_dir")
    info.set_defaults(func=_info)

    configs = sub.add_parser("configs", help="list the bundled configs")
    configs.set_defaults(func=_configs)

    from alignment.cli_figures import add_commands

    add_commands(sub)
    from alignment.cli_sweep import add_commands as add_sweep_commands

    add_sweep_commands(sub)
    from alignment.cli_verify import add_commands as add_verify_commands

    add_verify_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; a user's error is one line ``alignment: error: …`` on stderr (exit 2; a
    diverged run 3; a run folder that another process is training 4)."""
    from alignment.runlock import RunLockedError
    from alignment.training import DivergenceError
    from alignment.training.checkpoint import os_error_cause

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # the reader went away (`alignment info … | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (ConfigError, FileNotFoundError, ValueError, MissingExtraError) as error:
        return _fail(str(error), 2)
    except DivergenceError as error:
        return _fail(str(error), 3)
    except RunLockedError as error:
        return _fail(str(error), 4)
    except Exception as error:
        cause = os_error_cause(error)
        if cause is None:
            raise
        return _fail(_describe_os_error(cause), 2)


def _fail(message: str, code: int) -> int:
    print(f"alignment: error: {message}", file=sys.stderr)
    return code


_OS_FIXES = {
    errno.ENOSPC: "free some space (or use another --out), then run the same command again: "
    "an interrupted run resumes from its last checkpoint",
    errno.EDQUOT: "free some of your quota (or use another --out), then run the same command "
    "again: an interrupted run resumes from its last checkpoint",
    errno.EACCES: "choose a folder you may write to (--out), or fix its permissions",
    errno.EPERM: "choose a folder you may write to (--out), or fix its permissions",
    errno.EROFS: "choose a folder on a writable file system (--out)",
}


def _describe_os_error(error: OSError) -> str:
    """``"no space left on device while writing <path>: free some space …"``."""
    what = (error.strerror or str(error)).lower()
    where = f" at {error.filename}" if error.filename else ""
    if error.errno in (errno.ENOSPC, errno.EDQUOT) and error.filename:
        where = f" while writing {error.filename}"
    fix = _OS_FIXES.get(error.errno, "check the path and the file system")
    return f"{what}{where}: {fix}"


if __name__ == "__main__":
    raise SystemExit(main())
