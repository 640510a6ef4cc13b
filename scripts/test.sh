#!/usr/bin/env bash
# Runs the whole test suite: lint, the main environment, then the verl integration in its own environment.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check src tests benchmarks examples
.venv/bin/ruff format --check src tests benchmarks examples
.venv/bin/python -m pytest -m "not verl" "$@"
if [ -x .venv-verl/bin/python ]; then
  .venv-verl/bin/python -m pytest -m verl tests/integrations/test_verl_on_cpu.py
else
  echo "test.sh: .venv-verl is missing, so the verl tests did not run (scripts/setup.sh creates it)" >&2
  exit 1
fi
