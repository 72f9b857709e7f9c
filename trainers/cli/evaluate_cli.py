"""``cl3mrec evaluate``: score one split file with a saved model and print AUC/UAUC (all/warm/cold) as JSON."""

import argparse
import json
import logging
import sys
import time

from trainers.arg_types import positive_int
from trainers.atomic_io import require_writable_file, write_json_atomic
from trainers.inference.metrics import ranking_report
from trainers.inference.scoring import load_scorer, model_id_space

logger = logging.getLogger(__name__)


def evaluate_command(args: argparse.Namespace) -> int:
    from data_scripts.io import load_split_file

    if args.output:
        require_writable_file(args.output, "--output")  # before scoring, which may take long
    # Ids (history included) must be rows of the model's tables (if it has any): no silent scoring of others.
    num_users, num_items = model_id_space(args.model)
    dataset = load_split_file(args.split_file, args.allow_pickle, num_users=num_users, num_items=num_items)
    scorer = load_scorer(args.model, batch_size=args.batch_size, compile=args.compile)
    start = time.perf_counter()
    scores = scorer.score(dataset)
    seconds = time.perf_counter() - start
    if len(scores) != dataset.num_rows:
        raise ValueError(f"{args.model}: scorer returned {len(scores)} scores for {dataset.num_rows} rows")
    report = ranking_report(dataset["user_id"], dataset["label"], scores, dataset["warm"])
    report["rows_per_second"] = round(dataset.num_rows / max(seconds, 1e-9), 1)
    report.update(model=str(args.model), split_file=str(args.split_file))
    logger.info("scored %d rows in %.1f s", dataset.num_rows, seconds)
    json.dump(report, sys.stdout)  # first: a failing --output write below must not lose the scores
    sys.stdout.write("\n")
    sys.stdout.flush()
    if args.output:
        write_json_atomic(args.output, report)
    return 0


def register(subparsers) -> None:
    """Add ``evaluate`` to the ``cl3mrec`` parser."""
    parser = subparsers.add_parser("evaluate", help="AUC / UAUC of a saved model on one split file")
    parser.add_argument("--model", required=True, help="saved model directory (config.json + weights)")
    parser.add_argument("--split-file", required=True, help="CoLLM .pkl, our .parquet, or DATASET_DIR::split")
    parser.add_argument("--allow-pickle", action="store_true", help="allow reading .pkl files (trusted files only)")
    parser.add_argument(
        "--batch-size", type=positive_int, default=None, help="scoring batch size (scorer default if unset)"
    )
    parser.add_argument(
        "--compile", action="store_true",
        help="LLM models: run the decoder through torch.compile (whole prompts; 1.3-1.7x faster on 2 Xeon cores "
        "with AMX, no faster on an AMD EPYC; "
        "needs a C++ compiler)",
    )
    parser.add_argument("--output", help="also write the JSON report here (atomically)")
    parser.set_defaults(func=evaluate_command)
