"""How much does a fused run's LLM answer add to its CF logit? Re-weight the answer on valid_small.

    python scripts/answer_weight_sweep.py --data runs/ml1m/data --cf runs/ml1m/cf/mf \
        --run runs/ml1m/seeds_lora8k/collm_cie_weighted_crossfit_s0 --run ... --answer-weights 0 0.1 0.2 0.3 0.4

A run with `score_fusion: weighted` scores `a · answer logit + w · CF logit` (a and w in its `eval_results.json`).
From its valid_small scores (`eval_scores.npy`, rows `eval_rows.npy`) and the CF model's logits on the same rows,
the answer logit is recovered, `(score − w · CF logit) / a`, and each row of the output re-scores the run with a
replaced by every value of `--answer-weights` (w kept): AUC / UAUC of the answer alone and of each re-weighted
score. a = 0 is the CF model alone. Two runs compared at the same a differ only in their answers, not in how much
their training chose to trust them. A diagnostic, not a selection: nothing here changes a saved model.
"""

from pathlib import Path

import numpy as np

from data_scripts.io import load_dataset_dict
from trainers.arg_types import ArgumentParser
from trainers.inference.metrics import ranking_report
from trainers.inference.scoring import load_scorer
from trainers.model_dirs import read_eval_results, read_eval_scores


def fusion_weights(run: Path) -> tuple[float, float]:
    """`(a, w)`: the answer and CF-logit weights a weighted-fusion run was evaluated with."""
    path = run / "eval_results.json"
    metrics = read_eval_results(run, "--run").get("valid_small", {})
    if "fusion/answer_weight" not in metrics:
        raise ValueError(f"{path}: no fusion/answer_weight (not a `score_fusion: weighted` run)")
    if abs(metrics["fusion/answer_weight"]) < 1e-6:
        raise ValueError(f"{path}: answer weight a = 0: the answer cannot be recovered")
    return float(metrics["fusion/answer_weight"]), float(metrics["fusion/weight"])


def main() -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="imported dataset folder (cl3mrec data import-collm)")
    parser.add_argument("--cf", required=True, help="the saved CF model the runs fused (their cf_model_dir)")
    parser.add_argument("--run", action="append", required=True, help="a `cl3mrec train` output folder")
    parser.add_argument("--answer-weights", nargs="+", type=float, default=[0.0, 0.1, 0.2, 0.3, 0.4])
    args = parser.parse_args()
    if not Path(args.cf, "config.json").is_file():
        parser.exit(2, f"error: --cf {args.cf}: not a saved CF model (no config.json)\n")
    runs = []  # (run, rows [N], scores [N], a, w)
    try:
        split = load_dataset_dict(args.data)["valid_small"]
        for run in map(Path, args.run):
            runs.append((run, *read_eval_scores(run, "--run", num_rows=len(split)), *fusion_weights(run)))
    except (OSError, ValueError) as error:
        parser.exit(2, f"error: {error}\n")

    cf_logits = load_scorer(args.cf).score(split)
    labels, users = np.asarray(split["label"]), np.asarray(split["user_id"])

    def metric(rows: np.ndarray, scores: np.ndarray) -> str:
        return "{auc:.4f} / {uauc:.4f}".format(**ranking_report(users[rows], labels[rows], scores))

    header = ["run", "a", "w", "answer alone"] + [f"a = {value:g}" for value in args.answer_weights]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for run, rows, scores, answer_weight, cf_weight in runs:
        answer = (scores - cf_weight * cf_logits[rows]) / answer_weight
        cells = [run.name, f"{answer_weight:.2f}", f"{cf_weight:.2f}", metric(rows, answer)]
        cells += [metric(rows, value * answer + cf_weight * cf_logits[rows]) for value in args.answer_weights]
        lines.append("| " + " | ".join(cells) + " |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
