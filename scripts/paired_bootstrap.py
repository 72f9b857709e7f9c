"""Paired, user-clustered bootstrap of the AUC / UAUC difference between two models scored on the same rows.

    python scripts/paired_bootstrap.py --baseline runs/ml1m/collm_cie --candidate runs/ml1m/cl3mrec_cie \
        --data runs/ml1m/data
    python scripts/paired_bootstrap.py --baseline runs/ml1m/collm_cie_s{0,1,2} \
        --candidate runs/ml1m/cl3mrec_cie_s{0,1,2} --data runs/ml1m/data

Each run directory is a finished ``cl3mrec train`` folder: ``eval_results.json`` (which split it scored),
``eval_rows.npy`` and ``eval_scores.npy``. Several directories per side are seeds: the difference is averaged over
seed pairs (``trainers.inference.bootstrap``); the baseline has one seed or as many as the candidate. Bad runs or
arguments exit with status 2 and one line.
"""

import json
from pathlib import Path

import numpy as np

from data_scripts.io import load_dataset_dict
from trainers.arg_types import ArgumentParser, count, positive_int
from trainers.inference.bootstrap import check_seed_counts, paired_bootstrap
from trainers.model_dirs import read_shared_eval_scores


def main() -> None:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, nargs="+", required=True, help="run dir(s), one per seed")
    parser.add_argument("--candidate", type=Path, nargs="+", required=True, help="run dir(s), one per seed")
    parser.add_argument("--data", required=True, help="the DatasetDict directory the runs were scored on")
    parser.add_argument("--split", default="valid_small")
    parser.add_argument("--resamples", type=positive_int, default=1000, help="bootstrap resamples (>= 1)")
    parser.add_argument("--seed", type=count(0), default=0)
    args = parser.parse_args()

    try:
        check_seed_counts(len(args.baseline), len(args.candidate))
        if [path.resolve() for path in args.baseline] == [path.resolve() for path in args.candidate]:
            raise ValueError("--baseline and --candidate name the same run folders; compare two different models")
        data = load_dataset_dict(args.data)
        if args.split not in data:
            raise ValueError(f"--data={args.data}: no {args.split} split (has {', '.join(data)})")
        num_rows = len(data[args.split])
        base_rows, base_scores = read_shared_eval_scores(args.baseline, "--baseline", args.split, num_rows)
        cand_rows, cand_scores = read_shared_eval_scores(args.candidate, "--candidate", args.split, num_rows)
        if not np.array_equal(base_rows, cand_rows):
            raise ValueError(f"the baseline and candidate runs scored different {args.split} rows")
    except (OSError, ValueError) as error:
        parser.exit(2, f"error: {error}\n")
    split = data[args.split].select(base_rows)
    report = paired_bootstrap(
        np.asarray(split["user_id"]), np.asarray(split["label"]), base_scores, cand_scores, args.resamples, args.seed
    )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
