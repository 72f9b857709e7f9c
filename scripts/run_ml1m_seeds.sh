#!/usr/bin/env bash
# The protocol behind the README's ML-1M LLM table: each stage-cie recipe with 3 training seeds on top of the same
# stage-lora adapter, then the table (mean ± std over seeds, all / warm / cold, valid_small and the other half of
# valid) with paired user bootstraps, written to docs/results_ml1m_seeds.md by scripts/ml1m_results.py.
#
#   OUT=runs/ml1m bash scripts/run_ml1m_seeds.sh [RECIPE ...]      (after `make run`, which makes $OUT/tallrec_lora)
#
# OTHER_HALF=0 skips scoring the other half of valid (~12 min per model on 2 cores). TABLE=<file.md> writes the table
# elsewhere (default docs/results_ml1m_seeds.md), e.g. for the cross-fitted recipes:
#   TABLE=docs/results_ml1m_seeds_crossfit.md bash scripts/run_ml1m_seeds.sh \
#     collm_cie_fused_crossfit cl3mrec_cie_fused_crossfit
# INIT=<stage-lora run> starts every run from another stage-lora adapter (default $OUT/tallrec_lora); RUNS=<dir> is
# where the runs go (default $OUT/seeds; give each INIT its own).
#
# RECIPE names a configs/ml1m/<RECIPE>.yaml stage-cie file; default: the CoLLM-style and CL3M-Rec recipes with all
# CF knowledge, on MF. Each run is ~3 min of training + ~8 min of scoring valid_small (+ ~8 min for the other half)
# on 2 idle cores. Finished runs are skipped (stage_complete.json); only valid data is read.
set -euo pipefail

OUT=${OUT:-runs/ml1m}
LLM=${LLM:-runs/llm/smollm2-135m}
CL3MREC=${CL3MREC:-cl3mrec}
SEEDS=${SEEDS:-"0 1 2"}
OTHER_HALF=${OTHER_HALF:-1}
TABLE=${TABLE:-docs/results_ml1m_seeds.md}
INIT=${INIT:-$OUT/tallrec_lora}
RUNS=${RUNS:-$OUT/seeds}
RECIPES=("$@")
[[ ${#RECIPES[@]} -gt 0 ]] || RECIPES=(collm_cie_fused cl3mrec_cie_fused)

[[ -f "$INIT/stage_complete.json" ]] || { echo "run 'make run' first: $INIT is not a finished stage-lora run" >&2; exit 2; }
models=()
for recipe in "${RECIPES[@]}"; do
  encoder=$(python -c "import sys; from trainers.training.training_args import load_stage_config as l; print(l(sys.argv[1])['cf_model_dir'].rstrip('/').split('/')[-1])" "configs/ml1m/$recipe.yaml")
  dirs=()
  for seed in $SEEDS; do
    run="$RUNS/${recipe}_s$seed"
    dirs+=("$run")
    [[ -f "$run/stage_complete.json" ]] && { echo "== $run: done already"; continue; }
    echo "== $run"
    "$CL3MREC" train --config "configs/ml1m/$recipe.yaml" llm_path="$LLM" data_dir="$OUT/data" text_cache_dir="$OUT/cache" \
      init_from="$INIT" cf_model_dir="$OUT/cf/$encoder" output_dir="$run" seed="$seed" resume_from_checkpoint=true
  done
  models+=(--model "$recipe=$(IFS=,; echo "${dirs[*]}")")
done

compare=()
[[ ${#RECIPES[@]} -ge 2 ]] && compare+=(--compare "${RECIPES[1]}:${RECIPES[0]}")
compare+=(--compare "${RECIPES[-1]}:MF" --compare "${RECIPES[-1]}:LightGCN")
python scripts/ml1m_results.py --data "$OUT/data" --model "MF=$OUT/cf/mf" --model "LightGCN=$OUT/cf/lightgcn" \
  "${models[@]}" "${compare[@]}" $([[ $OTHER_HALF == 1 ]] && echo --other-half) --out "$TABLE"
