"""The README's ML-1M results table: every model on valid_small (and the other half of valid), seeds averaged,
with paired user bootstraps on each.

    python scripts/ml1m_results.py --data runs/ml1m/data \
        --model "MF=runs/ml1m/cf/mf" \
        --model "CoLLM-style=runs/ml1m/collm_cie_s0,runs/ml1m/collm_cie_s1,runs/ml1m/collm_cie_s2" \
        --model "CL3M-Rec=runs/ml1m/cl3mrec_cie_s0,runs/ml1m/cl3mrec_cie_s1,runs/ml1m/cl3mrec_cie_s2" \
        --compare "CL3M-Rec:CoLLM-style" --compare "CL3M-Rec:MF" --other-half --out docs/results_ml1m.md

A model is one directory per seed: a saved CF model (scored here, in seconds) or a ``cl3mrec train`` output
directory (valid_small scores from its ``eval_scores.npy``; every LLM run must have scored the same rows
(``eval_rows.npy``; ``eval_results.json`` must show it scored valid_small), and the CF models are scored on those
rows too; the other half of valid is scored from the run's ``merged/`` export and cached in the run folder under a
name that carries the rows and the export's weights). Only valid data is read: the test split stays unseen.
Writes a Markdown report and a JSON file beside it. Bad arguments or runs exit with status 2 and one line.
"""

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from data_scripts.io import load_dataset_dict
from trainers.atomic_io import require_writable_file, write_json_atomic, write_npy_atomic, write_text_atomic
from trainers.arg_types import ArgumentParser, positive_int
from trainers.inference.bootstrap import check_seed_counts, paired_bootstrap
from trainers.inference.metrics import ranking_report
from trainers.inference.scoring import load_scorer
from trainers.model_dirs import (
    read_model_config,
    read_npy,
    read_shared_eval_scores,
    require_model_dir,
    weights_fingerprint,
)

logger = logging.getLogger("ml1m_results")
COLUMNS = (
    ("auc", "AUC"), ("uauc", "UAUC"), ("warm.auc", "warm AUC"), ("cold.auc", "cold AUC"), ("warm.uauc", "warm UAUC")
)


def other_half(valid, valid_small):
    """The rows of ``valid`` that are not in ``valid_small`` (matched on user, item and timestamp)."""
    keys = lambda split: zip(split["user_id"], split["item_id"], split["timestamp"])  # noqa: E731
    small = set(keys(valid_small))
    return valid.select([index for index, key in enumerate(keys(valid)) if key not in small])


def is_cf_model(run_dir: Path) -> bool:
    if not (run_dir / "config.json").is_file():
        return False
    return read_model_config(run_dir, "--model").get("model_type") == "cl3mrec_cf"


def parse_arguments(parser, args) -> tuple[dict[str, list[Path]], list[tuple[str, str]]]:
    """``({name: seed dirs}, [(candidate, baseline)])`` from ``--model`` / ``--compare``; exit 2 on a bad one."""
    models = {}
    for spec in args.model:
        name, _, dirs = spec.partition("=")
        if name in models:
            parser.exit(2, f"error: --model name {name!r} given twice; give each model its own name\n")
        if ":" in name or "|" in name:  # ':' splits --compare, '|' a Markdown table cell
            parser.exit(2, f"error: --model name {name!r}: a name cannot hold ':' or '|'\n")
        models[name] = [Path(directory) for directory in dirs.split(",") if directory]
        if not name or not models[name]:
            parser.exit(2, f"error: --model {spec!r}: expected NAME=DIR[,DIR...]\n")
    pairs = []
    for spec in args.compare:
        candidate, colon, baseline = spec.partition(":")
        if not colon or candidate not in models or baseline not in models:
            parser.exit(2, f"error: --compare {spec!r}: expected CANDIDATE:BASELINE, two of {', '.join(models)}\n")
        if candidate == baseline:
            parser.exit(2, f"error: --compare {spec!r}: compares a model with itself; name two different models\n")
        if (candidate, baseline) in pairs:
            parser.exit(2, f"error: --compare {spec!r} given twice\n")
        try:
            check_seed_counts(len(models[baseline]), len(models[candidate]))
        except ValueError as error:
            parser.exit(2, f"error: --compare {spec!r}: {error}\n")
        pairs.append((candidate, baseline))
    return models, pairs


def saved_scores(llm_runs: list[Path], num_rows: int, other_half_too: bool):
    """``(rows, {run_dir: scores [N]})``: the valid_small rows every LLM run scored (all rows when there is none)
    and each run's saved scores; raise if a run is not usable or the runs scored different rows."""
    rows, scores = read_shared_eval_scores(llm_runs, "--model", num_rows=num_rows)
    if other_half_too:
        for run_dir in llm_runs:
            require_model_dir(run_dir / "merged", "--model")
    return (np.arange(num_rows) if rows is None else rows), dict(zip(llm_runs, scores))


def rest_scores(run_dir: Path, split_name: str, split) -> np.ndarray:
    """Scores ``[N]`` of an LLM run's export on ``split``, cached in the run folder under a name that carries the
    rows and the export's weights, so another data folder or a retrained model never reuses them."""
    columns = [list(split[column]) for column in ("user_id", "item_id", "timestamp")]
    rows = hashlib.sha256(json.dumps(columns).encode()).hexdigest()
    cache = run_dir / f"{split_name}_scores_{rows[:12]}_{weights_fingerprint(run_dir / 'merged')[:12]}.npy"
    if cache.is_file():
        try:
            scores = read_npy(cache, "f", "float scores")
            if scores.shape == (len(split),) and np.isfinite(scores).all():
                return scores
            problem = f"shape {scores.shape} or non-finite scores"
        except ValueError as error:
            problem = str(error)
        logger.warning("%s: damaged outside this script (%s); scoring again", cache, problem)
    logger.info("scoring %s on %d %s rows", run_dir, len(split), split_name)
    scores = load_scorer(run_dir / "merged").score(split)
    write_npy_atomic(cache, scores)
    return scores


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


def interval(report: dict) -> str:
    return f"{report['observed']:+.4f} [{report['ci95'][0]:+.4f}, {report['ci95'][1]:+.4f}]"


def main() -> None:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="DatasetDict directory with valid and valid_small")
    parser.add_argument("--model", action="append", required=True, help="NAME=DIR[,DIR...] (one dir per seed)")
    parser.add_argument("--compare", action="append", default=[], help="CANDIDATE:BASELINE (model names)")
    parser.add_argument("--other-half", action="store_true", help="also score valid rows not in valid_small")
    parser.add_argument("--resamples", type=positive_int, default=1000, help="bootstrap resamples (>= 1)")
    parser.add_argument("--out", required=True, type=Path, help="Markdown report; a .json is written beside it")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    models, pairs = parse_arguments(parser, args)
    try:
        if args.out.suffix == ".json":
            raise ValueError(f"--out={args.out}: name the Markdown report; the .json is written beside it")
        for path in (args.out, args.out.with_suffix(".json")):
            require_writable_file(path, "--out")
        folders = list(dict.fromkeys(run_dir for dirs in models.values() for run_dir in dirs))  # each once
        cf_models = {run_dir for run_dir in folders if is_cf_model(run_dir)}
        llm_runs = [run_dir for run_dir in folders if run_dir not in cf_models]
        data = load_dataset_dict(args.data)
        rows, saved = saved_scores(llm_runs, len(data["valid_small"]), args.other_half)
    except (OSError, ValueError) as error:
        parser.exit(2, f"error: {error}\n")
    splits = {"valid_small": data["valid_small"].select(rows)}
    if args.other_half:
        splits["valid_rest"] = other_half(data["valid"], data["valid_small"])

    def run_scores(run_dir: Path, split_name: str) -> np.ndarray:
        if run_dir in cf_models:
            return load_scorer(run_dir).score(splits[split_name])
        return saved[run_dir] if split_name == "valid_small" else rest_scores(run_dir, split_name, splits[split_name])

    by_folder = {split: {run_dir: run_scores(run_dir, split) for run_dir in folders} for split in splits}
    scores = {split: {name: [by_folder[split][d] for d in dirs] for name, dirs in models.items()} for split in splits}
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
    rest_columns = 2 if args.other_half else 0
    lines = [
        f"valid_small: {len(small)} rows, {len(set(small['user_id']))} users; mean ± std over seeds (n per row).",
        "",
        "| model | seeds | " + " | ".join(title for _, title in COLUMNS)
        + (" | other half AUC | other half UAUC |" if args.other_half else " |"),
        "| --- | --- |" + " --- |" * (len(COLUMNS) + rest_columns),
    ]
    for name in models:
        cells = [mean_std([lookup(report, key) for report in reports["valid_small"][name]]) for key, _ in COLUMNS]
        if args.other_half:
            rest = reports["valid_rest"][name]
            cells += [mean_std([lookup(report, key) for report in rest]) for key in ("auc", "uauc")]
        lines.append(f"| {name} | {len(models[name])} | " + " | ".join(cells) + " |")
    for split, split_comparisons in comparisons.items():
        if not split_comparisons:
            continue
        where = "valid_small" if split == "valid_small" else f"the other half of valid ({len(splits[split])} rows)"
        lines += ["", f"Paired user bootstrap on {where} ({args.resamples} resamples; "
                      "difference averaged over seed pairs):", ""]
        lines += ["| candidate − baseline | AUC diff [95% CI] | UAUC diff [95% CI] |", "| --- | --- | --- |"]
        for spec, report in split_comparisons.items():
            lines.append(f"| {spec.replace(':', ' − ')} | {interval(report['auc'])} | {interval(report['uauc'])} |")
    write_text_atomic(args.out, "\n".join(lines) + "\n")
    saved_models = {name: [str(run_dir) for run_dir in dirs] for name, dirs in models.items()}
    write_json_atomic(args.out.with_suffix(".json"),
                      {"models": saved_models, "reports": reports, "comparisons": comparisons})
    print("\n".join(lines))


if __name__ == "__main__":
    main()
