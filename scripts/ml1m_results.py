"""The README's ML-1M results table: every model on valid_small (and the other half of valid), seeds averaged,
with paired user bootstraps on each.

    python scripts/ml1m_results.py --data runs/ml1m/data \
        --model "MF=runs/ml1m/cf/mf" \
        --model "CoLLM-style=runs/ml1m/collm_cie_s0,runs/ml1m/collm_cie_s1,runs/ml1m/collm_cie_s2" \
        --model "CL3M-Rec=runs/ml1m/cl3mrec_cie_s0,runs/ml1m/cl3mrec_cie_s1,runs/ml1m/cl3mrec_cie_s2" \
        --compare "CL3M-Rec:CoLLM-style" --compare "CL3M-Rec:MF" --other-half --out docs/results_ml1m.md

A model is one directory per seed: a saved CF model (scored here, in seconds) or a ``cl3mrec train`` output
directory (valid_small scores from its ``eval_scores.npy``; every LLM run must have scored the same rows
(``eval_rows.npy``), and the CF models are scored on those rows too; the other half of valid is scored from the
run's ``merged/`` export and cached as ``valid_rest_scores_<rows hash>.npy``). Only valid data is read:
the test split stays unseen. Writes a Markdown report and a JSON file beside it.
"""

import argparse
import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from data_scripts.io import load_dataset_dict
from trainers.atomic_io import staging_file, write_json_atomic, write_text_atomic
from trainers.inference.bootstrap import paired_bootstrap
from trainers.inference.metrics import ranking_report
from trainers.inference.scoring import load_scorer
from trainers.model_dirs import read_eval_scores, read_model_config

logger = logging.getLogger("ml1m_results")
COLUMNS = (("auc", "AUC"), ("uauc", "UAUC"), ("warm.auc", "warm AUC"), ("cold.auc", "cold AUC"), ("warm.uauc", "warm UAUC"))


def other_half(valid, valid_small):
    """The rows of ``valid`` that are not in ``valid_small`` (matched on user, item and timestamp)."""
    keys = lambda split: zip(split["user_id"], split["item_id"], split["timestamp"])  # noqa: E731
    small = set(keys(valid_small))
    return valid.select([index for index, key in enumerate(keys(valid)) if key not in small])


def is_cf_model(run_dir: Path) -> bool:
    return (run_dir / "config.json").is_file() and read_model_config(run_dir, "--model").get("model_type") == "cl3mrec_cf"


def scored_rows(models: dict[str, list[Path]], num_rows: int) -> np.ndarray:
    """The valid_small rows every LLM run scored (all rows when there is none); raise if the runs differ."""
    rows = None
    for run_dir in (d for dirs in models.values() for d in dirs if not is_cf_model(d)):
        run_rows, _ = read_eval_scores(run_dir, "--model")
        if rows is not None and not np.array_equal(rows, run_rows):
            raise ValueError(f"--model {run_dir}: scored other valid_small rows than the runs before it")
        rows = run_rows
    return np.arange(num_rows) if rows is None else rows


def split_scores(run_dir: Path, split_name: str, split) -> np.ndarray:
    """Scores ``[N]`` of one run on one split (in row order)."""
    if is_cf_model(run_dir):
        return load_scorer(run_dir).score(split)
    if split_name == "valid_small":
        return read_eval_scores(run_dir, "--model")[1]
    # The cache name carries the rows it scored, so another data folder or split never reuses it.
    columns = [list(split[column]) for column in ("user_id", "item_id", "timestamp")]
    rows = hashlib.sha256(json.dumps(columns).encode()).hexdigest()
    cache = run_dir / f"{split_name}_scores_{rows[:12]}.npy"
    if not cache.is_file():
        logger.info("scoring %s on %d %s rows", run_dir, len(split), split_name)
        scores = load_scorer(run_dir / "merged").score(split)
        with staging_file(cache) as temporary, open(temporary, "wb") as handle:
            np.save(handle, scores)
    return np.load(cache)


def lookup(report: dict, dotted: str):
    for key in dotted.split("."):
        report = (report or {}).get(key)
    return report


def mean_std(values: list) -> str:
    values = [value for value in values if value is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="DatasetDict directory with valid and valid_small")
    parser.add_argument("--model", action="append", required=True, help="NAME=DIR[,DIR...] (one dir per seed)")
    parser.add_argument("--compare", action="append", default=[], help="CANDIDATE:BASELINE (model names)")
    parser.add_argument("--other-half", action="store_true", help="also score valid rows not in valid_small")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--out", required=True, type=Path, help="Markdown report; a .json is written beside it")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    models = {}
    for spec in args.model:
        name, _, dirs = spec.partition("=")
        models[name] = [Path(directory) for directory in dirs.split(",") if directory]
    pairs = [spec.partition(":")[::2] for spec in args.compare]
    unknown = sorted({name for pair in pairs for name in pair} - set(models))
    if unknown:
        parser.exit(2, f"error: --compare names {', '.join(unknown)}: not a --model name ({', '.join(models)})\n")
    try:
        data = load_dataset_dict(args.data)
        splits = {"valid_small": data["valid_small"].select(scored_rows(models, len(data["valid_small"])))}
        if args.other_half:
            splits["valid_rest"] = other_half(data["valid"], data["valid_small"])
        scores = {
            split: {name: [split_scores(d, split, rows) for d in dirs] for name, dirs in models.items()}
            for split, rows in splits.items()
        }
    except (FileNotFoundError, ValueError) as error:
        parser.exit(2, f"error: {error}\n")
    reports = {
        split: {
            name: [ranking_report(rows["user_id"], rows["label"], seed_scores, rows["warm"]) for seed_scores in runs]
            for name, runs in scores[split].items()
        }
        for split, rows in splits.items()
    }
    comparisons = {
        split: {
            f"{candidate}:{baseline}": paired_bootstrap(
                np.asarray(rows["user_id"]), np.asarray(rows["label"]), scores[split][baseline],
                scores[split][candidate], args.resamples,
            )
            for candidate, baseline in pairs
        }
        for split, rows in splits.items()
    }

    small = splits["valid_small"]
    lines = [
        f"valid_small: {len(small)} rows, {len(set(small['user_id']))} users; mean ± std over seeds (n per row).",
        "",
        "| model | seeds | " + " | ".join(title for _, title in COLUMNS)
        + (" | other half AUC | other half UAUC |" if args.other_half else " |"),
        "| --- | --- |" + " --- |" * (len(COLUMNS) + (2 if args.other_half else 0)),
    ]
    for name in models:
        cells = [mean_std([lookup(report, key) for report in reports["valid_small"][name]]) for key, _ in COLUMNS]
        if args.other_half:
            cells += [mean_std([lookup(report, key) for report in reports["valid_rest"][name]]) for key in ("auc", "uauc")]
        lines.append(f"| {name} | {len(models[name])} | " + " | ".join(cells) + " |")
    for split, split_comparisons in comparisons.items():
        if not split_comparisons:
            continue
        where = "valid_small" if split == "valid_small" else f"the other half of valid ({len(splits[split])} rows)"
        lines += ["", f"Paired user bootstrap on {where} ({args.resamples} resamples; difference averaged over seed pairs):"]
        lines += ["", "| candidate − baseline | AUC diff [95% CI] | UAUC diff [95% CI] |", "| --- | --- | --- |"]
        for spec, report in split_comparisons.items():
            cells = [f"{report[m]['observed']:+.4f} [{report[m]['ci95'][0]:+.4f}, {report[m]['ci95'][1]:+.4f}]" for m in ("auc", "uauc")]
            lines.append(f"| {spec.replace(':', ' − ')} | " + " | ".join(cells) + " |")
    write_text_atomic(args.out, "\n".join(lines) + "\n")
    write_json_atomic(args.out.with_suffix(".json"), {"models": {n: [str(d) for d in ds] for n, ds in models.items()},
                                                       "reports": reports, "comparisons": comparisons})
    print("\n".join(lines))


if __name__ == "__main__":
    main()
