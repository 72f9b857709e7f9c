#!/usr/bin/env bash
# One-command check of the GPU path on a CUDA machine (needs bitsandbytes: pip install -e '.[gpu]'):
#
#   bash scripts/gpu_check.sh [OUT]          (default OUT: runs/gpu_check; a few minutes on one GPU)
#
# Runs configs/smoke.yaml's recipe (synthetic data, MF, tiny random Llama, stage lora -> stage cie) twice on the
# GPU, with no use_cpu (the stage arguments pick CUDA themselves):
#   bf16   - fp32 weights + bf16 autocast;
#   qlora  - quantization=nf4 (prepare_model_for_kbit_training, activation checkpointing), bf16 autocast.
# Each run exports the merged model and reloads it on the CPU in a fresh process through
# pipeline("cl3mrec-scoring", trust_remote_code=True); the reloaded scores are compared with the scores the trainer
# computed on the GPU. bf16: max |difference| <= 0.05 (bf16 autocast vs fp32). qlora: the export merges the adapter
# into the LLM reloaded in full precision, so its scores differ from the 4-bit model's by the quantisation error:
# Pearson r >= 0.9 and the export holds no 4-bit weights. Exit status 0 = every check passed.
set -euo pipefail
OUT=${1:-runs/gpu_check}
PYTHON=${PYTHON:-python}
CL3MREC=${CL3MREC:-cl3mrec}

"$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_check: no CUDA GPU visible')"
"$PYTHON" -c "import bitsandbytes" 2>/dev/null || { echo "gpu_check: bitsandbytes missing: pip install -e '.[gpu]'" >&2; exit 2; }
mkdir -p "$OUT"

for run in bf16 qlora; do
  "$PYTHON" - "$OUT" "$run" <<'PY'
import sys
from pathlib import Path
import yaml
out, run = Path(sys.argv[1]), sys.argv[2]
spec = yaml.safe_load(Path("configs/smoke.yaml").read_text())
spec["out_dir"] = str(out / run)
spec["reload_atol"] = 0.05 if run == "bf16" else 10.0  # qlora is judged by correlation below
defaults = spec["defaults"]
defaults.pop("use_cpu")  # the GPU, as a real run would pick it
defaults.update(bf16=True, max_steps=8)
if run == "qlora":
    defaults.update(quantization="nf4", activation_checkpointing=True)
(out / f"{run}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
PY
  echo "== $run"
  "$CL3MREC" pipeline --config "$OUT/$run.yaml" > "$OUT/$run.json"
  "$PYTHON" - "$OUT" "$run" <<'PY'
import json, sys
from pathlib import Path
import numpy as np
out, run = Path(sys.argv[1]), sys.argv[2]
results = json.loads((out / f"{run}.json").read_text().strip().splitlines()[-1])
export = Path(results["export_dir"])
trained = np.load(export.parent / "eval_scores.npy")
reloaded = np.load(export / "reload_scores.npy")
r = float(np.corrcoef(trained, reloaded)[0, 1])
quantized = "quantization_config" in (export / "config.json").read_text()
print(f"{run}: eval AUC {results['stages']['cie']['eval_auc']:.4f}, reload max |diff| {results['reload_max_abs_diff']:.2e}, "
      f"Pearson r {r:.4f}, 4-bit weights in the export: {quantized}")
ok = results["reload_identical"] and not quantized and (run == "bf16" or r >= 0.9)
sys.exit(0 if ok else f"gpu_check: {run} FAILED")
PY
done
echo "gpu_check: all passed"
