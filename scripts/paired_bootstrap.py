"""Paired, user-clustered bootstrap of the AUC / UAUC difference between two runs scored on the same rows.

    python scripts/paired_bootstrap.py runs/ml1m/collm_cie runs/ml1m/cl3mrec_cie --data runs/ml1m/data

Each run directory holds ``eval_scores.npy`` and ``eval_rows.npy`` (written by ``cl3mrec train``); users are
resampled with replacement, so the interval reflects which users happen to be in the split, not training noise.
"""

import argparse
import json
from pathlib import Path

import numpy as np

from data_scripts.io import load_dataset_dict
from trainers.metrics import auc, uauc


def load_run(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    return np.load(run_dir / "eval_scores.npy"), np.load(run_dir / "eval_rows.npy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", type=Path)
    parser.add_argument("candidate", type=Path)
    parser.add_argument("--data", required=True, help="the DatasetDict directory the runs were scored on")
    parser.add_argument("--split", default="valid_small")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    base_scores, base_rows = load_run(args.baseline)
    cand_scores, cand_rows = load_run(args.candidate)
    if not np.array_equal(base_rows, cand_rows):
        raise SystemExit(f"{args.baseline} and {args.candidate} were scored on different rows")
    split = load_dataset_dict(args.data)[args.split].select(base_rows)
    labels, users = np.asarray(split["label"]), np.asarray(split["user_id"])

    def differences(user_ids, rows) -> dict[str, float]:
        """Candidate − baseline AUC and UAUC over ``rows``, users identified by ``user_ids``."""
        base, cand, row_labels = base_scores[rows], cand_scores[rows], labels[rows]
        return {
            "auc": auc(row_labels, cand) - auc(row_labels, base),
            "uauc": uauc(user_ids, row_labels, cand)[0] - uauc(user_ids, row_labels, base)[0],
        }

    rows_of_user = {user: np.flatnonzero(users == user) for user in np.unique(users)}
    unique_users = np.array(list(rows_of_user))
    rng = np.random.default_rng(args.seed)
    resampled = []
    for _ in range(args.resamples):
        picked = rng.choice(unique_users, len(unique_users))
        rows = np.concatenate([rows_of_user[user] for user in picked])
        # Resampled users get distinct ids so that a user drawn twice counts twice in UAUC.
        ids = np.repeat(np.arange(len(picked)), [len(rows_of_user[user]) for user in picked])
        resampled.append(differences(ids, rows))
    observed = differences(users, np.arange(len(users)))
    report = {}
    for name, value in observed.items():
        values = np.array([sample[name] for sample in resampled])
        report[name] = {
            "observed": float(value),
            "ci95": [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))],
            "p_not_better": float(np.mean(values <= 0)),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
