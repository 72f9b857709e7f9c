"""Does an LLM run carry signal its CF encoder lacks? A cross-fitted blend of the two scores on valid_small.

    python scripts/llm_cf_complementarity.py --data runs/ml1m/data --cf MF=runs/ml1m/cf/mf \
        --cf LightGCN=runs/ml1m/cf/lightgcn --run runs/ml1m/tallrec_lora --run runs/ml1m/seeds/collm_cie_fused_s0

For every (LLM run, CF model) pair, on the valid_small rows the run scored (`eval_scores.npy`, `eval_rows.npy`):
the AUC / UAUC of the run, of the CF model, and of `a · run score + b · CF logit` with (a, b) fitted by logistic
regression on half of the users and evaluated on the other half, both ways (2-fold cross-fitting by user, so no
row is scored by weights fitted on it). A blend no better than the CF model alone means the LLM adds nothing the
CF model does not already rank. Only valid rows are read.
"""

import argparse
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from data_scripts.io import load_dataset_dict
from trainers.inference.metrics import ranking_report
from trainers.inference.scoring import load_scorer


def cross_fitted_blend(features: np.ndarray, labels: np.ndarray, users: np.ndarray, seed: int = 0) -> np.ndarray:
    """Blend scores `[N]` of `features [N, k]`: logistic-regression weights fitted on one half of the users score
    the other half, and the reverse."""
    unique = np.unique(users)
    first = np.isin(users, np.random.default_rng(seed).permutation(unique)[: len(unique) // 2])
    blended = np.empty(len(labels))
    for fit, score in ((first, ~first), (~first, first)):
        model = LogisticRegression(C=1e4, max_iter=1000).fit(features[fit], labels[fit])
        blended[score] = model.decision_function(features[score])
    return blended


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="imported dataset folder (cl3mrec data import-collm)")
    parser.add_argument("--cf", action="append", required=True, help="NAME=DIR of a saved CF model")
    parser.add_argument("--run", action="append", required=True, help="a `cl3mrec train` output folder")
    args = parser.parse_args()

    for run in map(Path, args.run):
        missing = [name for name in ("eval_scores.npy", "eval_rows.npy") if not (run / name).is_file()]
        if missing:
            parser.exit(2, f"error: --run {run}: no {' / '.join(missing)} (not a finished `cl3mrec train` folder)\n")
    for item in args.cf:
        if "=" not in item or not Path(item.split("=", 1)[1], "config.json").is_file():
            parser.exit(2, f"error: --cf {item!r}: expected NAME=DIR of a saved CF model (DIR/config.json)\n")
    try:
        split = load_dataset_dict(args.data)["valid_small"]
    except (FileNotFoundError, KeyError) as error:
        parser.exit(2, f"error: --data {args.data}: {error}\n")
    print("| LLM run | CF model | rows | run AUC / UAUC | CF AUC / UAUC | cross-fitted blend AUC / UAUC |")
    print("| --- | --- | --- | --- | --- | --- |")
    for run in map(Path, args.run):
        rows = split.select(np.load(run / "eval_rows.npy").tolist())
        run_scores = np.load(run / "eval_scores.npy")
        labels, users, warm = (np.asarray(rows[column]) for column in ("label", "user_id", "warm"))
        for name, cf_dir in (item.split("=", 1) for item in args.cf):
            cf_scores = load_scorer(cf_dir).score(rows)
            blend = cross_fitted_blend(np.stack([run_scores, cf_scores], axis=1), labels, users)
            cells = [ranking_report(users, labels, scores, warm) for scores in (run_scores, cf_scores, blend)]
            text = [f"{report['auc']:.4f} / {report['uauc']:.4f}" for report in cells]
            print(f"| {run.name} | {name} | {len(rows):,} | {' | '.join(text)} |")


if __name__ == "__main__":
    main()
