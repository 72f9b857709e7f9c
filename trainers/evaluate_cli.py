"""``cl3mrec evaluate``: score one split file with a saved model and print AUC/UAUC (all/warm/cold) as JSON."""

import argparse
import json
import logging
import sys
import time

from trainers.atomic_io import write_json_atomic
from trainers.metrics import ranking_report
from trainers.scoring import load_scorer

logger = logging.getLogger(__name__)


def evaluate_command(args: argparse.Namespace) -> int:
    from data_scripts.io import load_split_file

    dataset = load_split_file(args.split_file, allow_pickle=args.allow_pickle)
    scorer = load_scorer(args.model, batch_size=args.batch_size)
    start = time.perf_counter()
    scores = scorer.score(dataset)
    seconds = time.perf_counter() - start
    if len(scores) != dataset.num_rows:
        raise ValueError(f"{args.model}: scorer returned {len(scores)} scores for {dataset.num_rows} rows")
    report = ranking_report(dataset["user_id"], dataset["label"], scores, dataset["warm"])
    report["rows_per_second"] = round(dataset.num_rows / max(seconds, 1e-9), 1)
    report.update(model=str(args.model), split_file=str(args.split_file))
    logger.info("scored %d rows in %.1f s", dataset.num_rows, seconds)
    if args.output:
        write_json_atomic(args.output, report)
    json.dump(report, sys.stdout)
    sys.stdout.write("\n")
    return 0


def register(subparsers) -> None:
    """Add ``evaluate`` to the ``cl3mrec`` parser."""
    parser = subparsers.add_parser("evaluate", help="AUC / UAUC of a saved model on one split file")
    parser.add_argument("--model", required=True, help="saved model directory (config.json + weights)")
    parser.add_argument("--split-file", required=True, help="CoLLM .pkl, our .parquet, or DATASET_DIR::split")
    parser.add_argument("--allow-pickle", action="store_true", help="allow reading .pkl files (trusted files only)")
    parser.add_argument("--batch-size", type=int, default=None, help="scoring batch size (scorer default if unset)")
    parser.add_argument("--output", help="also write the JSON report here (atomically)")
    parser.set_defaults(func=evaluate_command)
