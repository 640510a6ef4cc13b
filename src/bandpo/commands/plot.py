"""`bandpo plot` (placeholder: being written)."""

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    raise NotImplementedError("bandpo plot is not written yet")
