"""Does an LLM run (or the prompt's text at all) carry signal the CF encoder lacks? Cross-fitted blends on valid_small.

    python scripts/llm_cf_complementarity.py --data runs/ml1m/data --cf MF=runs/ml1m/cf/mf \
        --cf LightGCN=runs/ml1m/cf/lightgcn --run runs/ml1m/tallrec_lora --run runs/ml1m/seeds/collm_cie_fused_s0 \
        --text-baseline 1024 --text-baseline all

For every (scorer, CF model) pair, on the valid_small rows the scorer scored: the AUC / UAUC of the scorer, of the
CF model, and of `a · score + b · CF logit` with (a, b) fitted by logistic regression on half of the users and
evaluated on the other half, both ways (2-fold cross-fitting by user, so no row is scored by weights fitted on
it). A blend no better than the CF model alone means the scorer adds nothing the CF model does not already rank.
Scorers: `--run` folders of `cl3mrec train` (the rows of their `eval_rows.npy`, scores `eval_scores.npy`) and
`--text-baseline N`, a TF-IDF + logistic-regression model of the prompt's titles (`--text-fields`) fitted on
N random train rows (`all`: the whole train split; `trainers.inference.text_baseline`), scored on every valid_small
row — how much the text alone ranks at an LLM stage's budget. Train rows fit the text baseline; only valid rows
are scored. `--cf-ensembles` adds the cross-fitted blends of every combination of two or more `--cf` models: the
best any mix of the CF encoders' logits ranks on these rows (a ceiling for fused models that only re-weight them).
"""

import argparse
import itertools
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from data_scripts.io import load_dataset_dict
from trainers.arg_types import ArgumentParser
from trainers.inference.metrics import ranking_report
from trainers.inference.scoring import load_scorer
from trainers.inference.text_baseline import FIELDS, TextBaselineScorer
from trainers.model_dirs import read_eval_scores


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


def text_budget(value: str) -> int | None:
    """`--text-baseline` value: a row count >= 2, or `all` (None)."""
    if value == "all":
        return None
    if not value.isdigit() or int(value) < 2:
        raise argparse.ArgumentTypeError(f"expected a number of train rows >= 2 or 'all', got {value!r}")
    return int(value)


def main() -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="imported dataset folder (cl3mrec data import-collm)")
    parser.add_argument("--cf", action="append", required=True, help="NAME=DIR of a saved CF model")
    parser.add_argument("--run", action="append", default=[], help="a `cl3mrec train` output folder")
    parser.add_argument(
        "--text-baseline", action="append", default=[], type=text_budget, metavar="N",
        help="a TF-IDF text baseline fitted on N random train rows ('all': the whole split); repeatable",
    )
    parser.add_argument(
        "--text-fields", nargs="+", choices=FIELDS, default=list(FIELDS),
        help="what the text baseline reads: the candidate's title and/or the history titles (default: both)",
    )
    parser.add_argument(
        "--cf-ensembles", action="store_true", help="also blend every combination of two or more --cf models"
    )
    args = parser.parse_args()
    if not args.run and not args.text_baseline and not args.cf_ensembles:
        parser.exit(2, "error: nothing to compare: give --run, --text-baseline and/or --cf-ensembles\n")
    if args.cf_ensembles and len(args.cf) < 2:
        parser.exit(2, "error: --cf-ensembles blends two or more --cf models; give at least two\n")
    for item in args.cf:
        if "=" not in item or not Path(item.split("=", 1)[1], "config.json").is_file():
            parser.exit(2, f"error: --cf {item!r}: expected NAME=DIR of a saved CF model (DIR/config.json)\n")
    scorers = []  # (name, row indices into valid_small, scores [len(indices)])
    try:
        data = load_dataset_dict(args.data)
        split, train = data["valid_small"], data["train"]
        for run in map(Path, args.run):
            scorers.append((run.name, *read_eval_scores(run, "--run", num_rows=len(split))))
    except (OSError, ValueError) as error:
        parser.exit(2, f"error: {error}\n")

    for budget in args.text_baseline:
        try:
            baseline = TextBaselineScorer(train, fields=tuple(args.text_fields), max_rows=budget)
        except ValueError as error:
            parser.exit(2, f"error: --text-baseline {budget or 'all'}: {error}\n")
        name = f"text TF-IDF, {' + '.join(args.text_fields)} ({baseline.num_train_rows:,} train rows)"
        scorers.append((name, np.arange(len(split)), baseline.score(split)))

    # Each CF model scores valid_small once; every scorer reads its rows from that.
    cf_scores = {name: load_scorer(cf_dir).score(split) for name, cf_dir in (item.split("=", 1) for item in args.cf)}
    columns = {column: np.asarray(split[column]) for column in ("label", "user_id", "warm")}
    if scorers:
        print("| scorer | CF model | rows | scorer AUC / UAUC | CF AUC / UAUC | cross-fitted blend AUC / UAUC |")
        print("| --- | --- | --- | --- | --- | --- |")
    for scorer_name, rows, scores in scorers:
        labels, users, warm = (columns[column][rows] for column in ("label", "user_id", "warm"))
        for name, all_cf in cf_scores.items():
            blend = cross_fitted_blend(np.stack([scores, all_cf[rows]], axis=1), labels, users)
            cells = [ranking_report(users, labels, values, warm) for values in (scores, all_cf[rows], blend)]
            text = [f"{report['auc']:.4f} / {report['uauc']:.4f}" for report in cells]
            print(f"| {scorer_name} | {name} | {len(rows):,} | {' | '.join(text)} |")
    if args.cf_ensembles:
        if scorers:
            print()
        print_cf_ensembles(cf_scores, columns)


def print_cf_ensembles(cf_scores: dict[str, np.ndarray], columns: dict[str, np.ndarray]) -> None:
    """A table of every CF model alone and of the cross-fitted blend of each combination of two or more."""
    labels, users, warm = (columns[column] for column in ("label", "user_id", "warm"))
    print("| CF models | rows | AUC / UAUC (blends: cross-fitted) |\n| --- | --- | --- |")
    for size in range(1, len(cf_scores) + 1):
        for names in itertools.combinations(cf_scores, size):
            features = np.stack([cf_scores[name] for name in names], axis=1)
            scores = features[:, 0] if size == 1 else cross_fitted_blend(features, labels, users)
            report = ranking_report(users, labels, scores, warm)
            print(f"| {' + '.join(names)} | {len(labels):,} | {report['auc']:.4f} / {report['uauc']:.4f} |")


if __name__ == "__main__":
    main()
