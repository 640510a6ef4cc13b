"""The `bandpo` console script: one entry point, one module per subcommand in this package.

Each command module exposes `add_arguments(parser)` and `run(args) -> int`. Only the CLI prints; a failure
exits non-zero with a one-line cause (a file that cannot be written says which, and a full disk says so).
``bandpo --version`` answers before any command module (and torch) is imported.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import signal
import sys
from collections.abc import Sequence

__all__ = ["COMMANDS", "UsageError", "build_parser", "describe_os_error", "main"]

# subcommand -> (its module in this package, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "bounds": ("bounds", "print Band ratio bounds and probability margins beside clip and Clip-Higher"),
    "train": ("train", "train a policy with BandPO or a baseline (embedded CPU default, or your model)"),
    "compare": ("compare", "run several methods x seeds at equal budget and write report.md with plots"),
    "plot": ("plot", "plot Band's ratio bounds and clipping region (the paper's Fig. 1 and 2)"),
    "doctor": ("doctor", "check versions, the verl plugin, CUDA and the caches; print the fixes"),
    "prepare-model": ("prepare_model", "fetch and convert a real pretrained checkpoint once (offline after)"),
    "tokens": ("tokens", "where sampled tokens sit by old probability, and what each method lets them do"),
}


# what an interrupted command says about picking up where it stopped
_RESUME_HINTS = {
    "train": "; continue the run with --resume --output-dir RUN_DIR (from its last checkpoint)",
    "compare": "; run the same compare again to continue (finished runs are kept, the others resume)",
}


class UsageError(Exception):
    """A bad argument or input: printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    from bandpo import __version__

    parser = argparse.ArgumentParser(prog="bandpo", description=__doc__.splitlines()[0])
    parser.add_argument("-V", "--version", action="version", version=f"bandpo {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(f"bandpo.cli.{module_name}")
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    return parser


def describe_os_error(error: OSError) -> str:
    """One line for a failed file operation: what, where, and the fix."""
    where = (
        f" ({error.filename})" if error.filename and str(error.filename) not in str(error.strerror) else ""
    )
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            f"disk full: no space left on the device{where} ({error.strerror}); free some space or choose "
            "another --output-dir, then rerun with --resume to continue from the last checkpoint"
        )
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason = error.strerror or "permission denied"
        return f"cannot write{where}: {reason}; choose a writable folder (--output-dir, --cache-dir)"
    return f"{error.strerror or error}{where}"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv in (["--version"], ["-V"]):  # cheap: no command module, no torch
        from bandpo import __version__

        print(f"bandpo {__version__}")
        return 0
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from bandpo.training._lifetime import Terminated, terminate_raises

    # under torchrun / accelerate launch every process runs the same checks: only the first reports them
    speaks = os.environ.get("RANK", "0") in ("", "0")
    try:
        with terminate_raises():  # SIGTERM unwinds like Ctrl-C: children are stopped, workers closed
            return int(args._run(args))
    except Terminated:
        if speaks:
            print(
                f"bandpo {args.command}: stopped by SIGTERM{_RESUME_HINTS.get(args.command, '')}",
                file=sys.stderr,
            )
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        if speaks:
            print(f"bandpo: interrupted{_RESUME_HINTS.get(args.command, '')}", file=sys.stderr)
        return 130
    except (UsageError, ValueError, ImportError) as error:
        if speaks:
            print(f"bandpo {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except OSError as error:
        if speaks:
            print(f"bandpo {args.command}: error: {_one_line(describe_os_error(error))}", file=sys.stderr)
        return 2


def _one_line(error: object) -> str:
    return " ".join(str(error).split())
