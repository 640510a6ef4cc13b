"""The `bandpo` console script: one entry point, one module per subcommand under `bandpo.commands`.

Each command module exposes `add_arguments(parser)` and `run(args) -> int`. Only the CLI prints; a failure
exits non-zero with a one-line cause.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["COMMANDS", "UsageError", "build_parser", "main"]

# subcommand -> (module under bandpo.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "bounds": ("bounds", "print Band ratio bounds and probability margins beside clip and Clip-Higher"),
    "train": ("train", "train a policy with BandPO or a baseline (embedded CPU default, or your model)"),
    "compare": ("compare", "run several methods x seeds at equal budget and write report.md with plots"),
    "plot": ("plot", "plot Band's ratio bounds and clipping region (the paper's Fig. 1 and 2)"),
    "doctor": ("doctor", "check versions, the verl plugin, CUDA and the warm-up cache; print the fixes"),
}


class UsageError(Exception):
    """A bad argument or input: printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    from bandpo import __version__

    parser = argparse.ArgumentParser(prog="bandpo", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"bandpo {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(f"bandpo.commands.{module_name}")
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args))
    except KeyboardInterrupt:
        print("bandpo: interrupted", file=sys.stderr)
        return 130
    except (UsageError, ValueError, FileNotFoundError, ImportError) as error:
        print(f"bandpo {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
