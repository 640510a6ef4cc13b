#!/usr/bin/env bash
# Runs the whole test suite: lint, the main environment, then the verl and SkyRL integrations in their own
# environments.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check src tests benchmarks examples
.venv/bin/ruff format --check src tests benchmarks examples
# tests/conftest.py fails this run when a process the tests started is still alive at the end
.venv/bin/python -m pytest -m "not verl and not skyrl" "$@"
if [ -x .venv-verl/bin/python ]; then
  # the verl tests: the loss in verl's registry, the paper recipe of examples/verl (config keys, verifier,
  # data), doctor's plugin checks, then stock `main_ppo` end to end (three Ray runs on CPU, about 5 min here).
  # Ray's own daemons are Ray's to stop: leftovers are listed here, not (yet) a failure
  BANDPO_LEFTOVER_PROCESSES=report .venv-verl/bin/python -m pytest -m verl tests/integrations/test_verl_on_cpu.py \
    tests/integrations/test_verl_recipe_on_cpu.py tests/cli/test_doctor.py \
    tests/integrations/test_verl_e2e_on_cpu.py
else
  echo "test.sh: .venv-verl is missing, so the verl tests did not run (scripts/setup.sh creates it)" >&2
  exit 1
fi
if [ -x .venv-skyrl/bin/python ]; then
  # the SkyRL tests: the loss against SkyRL's own regular/dual_clip/dppo, Ray registry sync, config, doctor's
  # check, then SkyRL's own GRPO loop end to end (three Ray runs on CPU, 3-5 min each on a loaded 2-vCPU machine). skyrl 0.3.0 does not
  # import on Python 3.11: the test-only sitecustomize on PYTHONPATH fixes that in every process of the run.
  PYTHONPATH="$PWD/tests/integrations/skyrl_cpu/py311" BANDPO_LEFTOVER_PROCESSES=report .venv-skyrl/bin/python -m pytest \
    -m skyrl tests/integrations/test_skyrl_on_cpu.py tests/cli/test_doctor.py tests/integrations/test_skyrl_e2e_on_cpu.py
else
  echo "test.sh: .venv-skyrl is missing, so the SkyRL tests did not run (scripts/setup.sh creates it)" >&2
  exit 1
fi
