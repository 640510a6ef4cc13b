#!/usr/bin/env bash
# GRPO vs BandPO on math with stock verl on a Ray cluster (the BandPO paper's setup, see config/*.yaml).
#
#   bash examples/verl/run.sh grpo   [extra hydra overrides...]
#   bash examples/verl/run.sh bandpo [extra hydra overrides...]
#
# Environment (defaults in brackets):
#   DATA_DIR       parquet files from prepare_data.py           [~/data/bandpo_math]
#   MODEL_PATH     HF id or local path of the policy            [Qwen/Qwen2.5-3B-Instruct]
#   NNODES         nodes in the Ray cluster                     [1]
#   GPUS_PER_NODE  GPUs per node                                [8]
#   PYTHON         interpreter of the verl environment          [python3]
#   VERIFIER       strict (the paper's) or lenient (verl 0.9.1's \boxed{} fallback)   [strict]
# Multi-node: `ray start --head` on the first node, `ray start --address=<head>:6379` on the others, then run
# this script on the head node with NNODES set. Every node needs the same environment with bandpo[verl].
# Extra arguments go to hydra as they are, e.g. `trainer.total_epochs=1` or `--cfg job` (print the
# composed config and exit).
set -euo pipefail

usage="usage: bash examples/verl/run.sh {grpo|bandpo} [hydra overrides...]"
method="${1:?$usage}"
shift
case "$method" in
  grpo) config_name=grpo_math ;;
  bandpo) config_name=bandpo_math ;;
  *) echo "error: unknown method '$method'; $usage" >&2; exit 2 ;;
esac

case "${VERIFIER:-strict}" in
  strict) reward_fn=compute_score ;;
  lenient) reward_fn=compute_score_lenient ;;
  *) echo "error: VERIFIER='${VERIFIER}' is unknown; use strict (the paper's) or lenient" >&2; exit 2 ;;
esac

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
data_dir="${DATA_DIR:-$HOME/data/bandpo_math}"
python="${PYTHON:-python3}"

# both arms score with reward.py, which imports bandpo's verifier on the reward workers
"$python" -c "import bandpo.math_dapo" ||
  { echo "error: reward.py needs bandpo: pip install bandpo[verl] in the environment of $python" >&2; exit 2; }

if [[ "$method" == bandpo ]]; then
  # fail fast if loss_mode=bandpo is not in verl's registry (verl swallows plugin import errors): the verl
  # plugin check of `bandpo doctor`, which says why and how to fix it (the rest of doctor is about TRL)
  "$python" -c "
import sys
from bandpo.cli.doctor import check_verl_plugin
check = check_verl_plugin()
if check.status != 'ok':
    sys.exit(f'error: {check.detail}; fix: {check.fix or \"pip install bandpo[verl] in this environment\"}')
" || { echo "error: loss_mode=bandpo cannot run with $python (see above; bandpo doctor checks it)" >&2; exit 2; }
fi

exec "$python" -m verl.trainer.main_ppo \
  --config-path="$here/config" \
  --config-name="$config_name" \
  data.train_files="['$data_dir/dapo_math_17k.parquet','$data_dir/math_level3to5.parquet']" \
  data.val_files="['$data_dir/aime24.parquet','$data_dir/aime25.parquet','$data_dir/amc23.parquet']" \
  actor_rollout_ref.model.path="${MODEL_PATH:-Qwen/Qwen2.5-3B-Instruct}" \
  reward.custom_reward_function.path="$here/reward.py" \
  reward.custom_reward_function.name="$reward_fn" \
  trainer.nnodes="${NNODES:-1}" \
  trainer.n_gpus_per_node="${GPUS_PER_NODE:-8}" \
  "$@"
