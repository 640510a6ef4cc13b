#!/usr/bin/env bash
# Runs the whole test suite: lint, the main environment, then the verl integration in its own environment.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check src tests benchmarks examples
.venv/bin/ruff format --check src tests benchmarks examples
# tests/conftest.py fails this run when a process the tests started is still alive at the end
.venv/bin/python -m pytest -m "not verl" "$@"
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
