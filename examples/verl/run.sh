#!/usr/bin/env bash
# The BandPO paper's math runs with stock verl on a Ray cluster: one arm per config/<arm>_math.yaml.
#
#   bash examples/verl/run.sh <arm> [extra hydra overrides...]
#
# Arms (docs/verl.md, "The arms"): grpo, clip_higher, dcpo, bandpo (Band-KL), bandpo_tv, bandpo_chi2,
# bandpo_relax, and with dynamic sampling dapo and bandpo_filter_groups.
# The model is one override: paper_model=qwen2.5-3b-instruct (default), r1-distill-qwen-1.5b,
# r1-distill-qwen-7b or r1-distill-llama-8b.
#
# Environment (defaults in brackets):
#   DATA_DIR       the parquet files                                          [~/data/bandpo_math]
#   DATA_LAYOUT    bandpo: prepare_data.py's files; official: the authors' Hugging Face datasets
#                  (Yuan-Li-FNLP/dapo_processed, math-500, aime2024_dapo, aime2025_dapo, amc2023_dapo),
#                  each downloaded into DATA_DIR/<its name>                   [bandpo]
#   MODEL_PATH     a local copy (or other HF id) of the policy; overrides paper_model's path   [unset]
#   NNODES         nodes in the Ray cluster                                   [1]
#   GPUS_PER_NODE  GPUs per node                                              [8]
#   PYTHON         interpreter of the verl environment                        [python3]
#   VERIFIER       strict (the paper's) or lenient (verl 0.9.1's \boxed{} fallback)   [strict]
# Multi-node: `ray start --head` on the first node, `ray start --address=<head>:6379` on the others, then run
# this script on the head node with NNODES set. Every node needs the same environment with bandpo[verl].
# Extra arguments go to hydra as they are, e.g. `paper_model=r1-distill-qwen-7b`, `trainer.total_epochs=1`
# or `--cfg job` (print the composed config and exit).
set -euo pipefail

# arm -> whether its loss is bandpo's (loss_mode=bandpo) or verl's own (vanilla)
declare -A bandpo_loss=(
  [grpo]=false [clip_higher]=false [dapo]=false
  [dcpo]=true [bandpo]=true [bandpo_tv]=true [bandpo_chi2]=true [bandpo_relax]=true
  [bandpo_filter_groups]=true
)
arms="grpo clip_higher dcpo bandpo bandpo_tv bandpo_chi2 bandpo_relax dapo bandpo_filter_groups"
usage="usage: bash examples/verl/run.sh {${arms// /|}} [hydra overrides...]"
method="${1:?$usage}"
shift
if [[ -z "${bandpo_loss[$method]:-}" ]]; then
  echo "error: unknown arm '$method'; $usage" >&2
  exit 2
fi

case "${VERIFIER:-strict}" in
  strict) reward_fn=compute_score ;;
  lenient) reward_fn=compute_score_lenient ;;
  *) echo "error: VERIFIER='${VERIFIER}' is unknown; use strict (the paper's) or lenient" >&2; exit 2 ;;
esac

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
data_dir="${DATA_DIR:-$HOME/data/bandpo_math}"
case "${DATA_LAYOUT:-bandpo}" in
  bandpo)
    train_files="['$data_dir/dapo_math_17k.parquet','$data_dir/math_level3to5.parquet']"
    val_files="['$data_dir/aime24.parquet','$data_dir/aime25.parquet','$data_dir/amc23.parquet']"
    ;;
  official)
    train_files="['$data_dir/dapo_processed/modified/DAPO-Math-17k-Processed_modified.parquet'"
    train_files+=",'$data_dir/math-500/train/train_L3-5.parquet']"
    val_files="['$data_dir/aime2024_dapo/test.parquet','$data_dir/aime2025_dapo/test.parquet'"
    val_files+=",'$data_dir/amc2023_dapo/test.parquet']"
    ;;
  *) echo "error: DATA_LAYOUT='${DATA_LAYOUT}' is unknown; use bandpo (prepare_data.py) or official" >&2; exit 2 ;;
esac
python="${PYTHON:-python3}"
model_override=()
if [[ -n "${MODEL_PATH:-}" ]]; then
  model_override=("actor_rollout_ref.model.path=$MODEL_PATH")
fi

# every arm scores with reward.py, which imports bandpo's verifier on the reward workers
"$python" -c "import bandpo.integrations.math_dapo" ||
  { echo "error: reward.py needs bandpo: pip install bandpo[verl] in the environment of $python" >&2; exit 2; }

if [[ "${bandpo_loss[$method]}" == true ]]; then
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
  --config-name="${method}_math" \
  data.train_files="$train_files" \
  data.val_files="$val_files" \
  reward.custom_reward_function.path="$here/reward.py" \
  reward.custom_reward_function.name="$reward_fn" \
  trainer.nnodes="${NNODES:-1}" \
  trainer.n_gpus_per_node="${GPUS_PER_NODE:-8}" \
  ${model_override[@]+"${model_override[@]}"} \
  "$@"
