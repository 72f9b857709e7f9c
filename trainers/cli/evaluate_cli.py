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


def check_dataset_id_space(split_file: str, model, num_users: int, num_items: int) -> None:
    """For a ``DIR::split`` of a saved dataset, refuse a model whose user / item tables are not the dataset's id
    space (``stats.json``): ids of a smaller data set fit the tables but name other users and items there."""
    from data_scripts.io import SPLIT_SEPARATOR, read_stats

    if SPLIT_SEPARATOR not in split_file:
        return
    stats = read_stats(split_file.rsplit(SPLIT_SEPARATOR, 1)[0])
    for key, size in (("num_users", num_users), ("num_items", num_items)):
        if stats[key] != size:
            raise ValueError(
                f"--split-file={split_file}: its data set has {key} = {stats[key]} (stats.json), but --model={model} "
                f"was trained with {size}: a split of other data; evaluate the model on its own data set"
            )


def evaluate_command(args: argparse.Namespace) -> int:
    from data_scripts.io import load_split_file
    from data_scripts.schema import validate_frame

    if args.output:
        require_writable_file(args.output, "--output")  # before scoring, which may take long
    dataset = load_split_file(args.split_file, allow_pickle=args.allow_pickle)
    num_users, num_items = model_id_space(args.model)
    if num_users is not None:  # ids (history included) must fit the model's tables: no silent scoring of others
        check_dataset_id_space(str(args.split_file), args.model, num_users, num_items)
        validate_frame(dataset.to_pandas(), str(args.split_file), num_users, num_items)
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
        help="LLM models: run the decoder through torch.compile (whole prompts; 1.3-1.7x faster on 2 CPU cores; "
        "needs a C++ compiler)",
    )
    parser.add_argument("--output", help="also write the JSON report here (atomically)")
    parser.set_defaults(func=evaluate_command)
