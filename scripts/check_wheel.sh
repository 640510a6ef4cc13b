#!/usr/bin/env bash
# Builds bandpo's sdist and wheel with `python -m build`, installs the wheel in a fresh virtual environment
# (torch first, at the version scripts/setup.sh tests with) and runs the installed `bandpo` console script from
# outside the repository, so nothing can come from the source tree.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
python=${PYTHON:-python3}
builder=${BUILD_PYTHON:-.venv/bin/python}
work=$(mktemp -d "${TMPDIR:-/tmp}/bandpo-check-wheel.XXXXXX")
trap 'rm -rf "$work"' EXIT
quiet=(--quiet --disable-pip-version-check)

log=$work/log.txt
fail() { cat "$log" >&2; echo "check_wheel: $*" >&2; exit 1; }

echo "check_wheel: python -m build"
SECONDS=0
"$builder" -m build --outdir "$work/dist" "$repo" >"$log" 2>&1 || fail "python -m build failed (log above)"
wheels=("$work"/dist/bandpo-*.whl)
[ ${#wheels[@]} = 1 ] || { echo "check_wheel: expected one wheel, found ${wheels[*]}" >&2; exit 1; }
wheel=${wheels[0]}
version=$("$builder" -c 'import sys; sys.path.insert(0, "src"); from bandpo._version import __version__; print(__version__)')
case "$(basename "$wheel")" in
  "bandpo-$version-py3-none-any.whl") ;;
  *) echo "check_wheel: wheel $(basename "$wheel") does not carry version $version" >&2; exit 1 ;;
esac
"$builder" - "$wheel" <<'PY'
import sys
import zipfile

names = zipfile.ZipFile(sys.argv[1]).namelist()
metadata = zipfile.ZipFile(sys.argv[1]).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
missing = [
    what
    for what, ok in [
        ("dist-info/licenses/LICENSE", any(n.endswith(".dist-info/licenses/LICENSE") for n in names)),
        ("License-Expression: Apache-2.0", "License-Expression: Apache-2.0" in metadata),
        ("bandpo/band/kl.py", "bandpo/band/kl.py" in names),
        ("no tests/ in the wheel", not any(n.startswith("tests/") for n in names)),
    ]
    if not ok
]
if missing:
    sys.exit(f"check_wheel: the wheel lacks {missing}")
PY

echo "check_wheel: fresh venv, torch==2.13.0, then $(basename "$wheel")"
build_s=$SECONDS
SECONDS=0
"$python" -m venv "$work/venv"
"$work/venv/bin/pip" install "${quiet[@]}" torch==2.13.0 >"$log" 2>&1 || fail "pip install torch==2.13.0 failed (log above)"
"$work/venv/bin/pip" install "${quiet[@]}" "$wheel" >"$log" 2>&1 || fail "pip install of the wheel failed (log above)"
install_s=$SECONDS
SECONDS=0

cd "$work"  # away from the source tree
installed=$("$work/venv/bin/python" -c 'import bandpo; print(bandpo.__file__)')
case "$installed" in
  "$work/venv/"*) ;;
  *) echo "check_wheel: bandpo was imported from $installed, not from the fresh venv" >&2; exit 1 ;;
esac
[ "$("$work/venv/bin/bandpo" --version)" = "bandpo $version" ] || { echo "check_wheel: bandpo --version is wrong" >&2; exit 1; }
"$work/venv/bin/bandpo" bounds
echo "check_wheel: ok (bandpo $version from $(basename "$wheel"); build ${build_s}s, fresh venv and install ${install_s}s, run ${SECONDS}s)"
