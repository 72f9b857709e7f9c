"""``cl3mrec train`` (one stage from a YAML) and ``cl3mrec pipeline`` (the whole recipe end to end).

Parsing and calling only: a stage is built by :func:`trainers.training.stage_setup.build_stage` and run, exported and
marked complete by :func:`trainers.training.stage_run.run_stage`; the pipeline is :func:`trainers.training.smoke_pipeline.run_pipeline`.
"""

import argparse
import contextlib
import json
import logging
import sys

from accelerate import PartialState

from ..training.smoke_pipeline import run_pipeline
from ..training.stage_run import run_stage
from ..training.training_args import arguments_help, parse_config

logger = logging.getLogger(__name__)


def train_command(args: argparse.Namespace) -> int:
    """``cl3mrec train --config configs/ml1m/<exp>.yaml [key=value ...]``.

    The stage's eval metrics, as JSON, are the last line of stdout; the Trainer's log dicts go to stderr."""
    model_args, data_args, training_args = parse_config(args.config, args.overrides)
    with contextlib.redirect_stdout(sys.stderr):
        metrics = run_stage(model_args, data_args, training_args)
    logger.info("eval_auc %.4f eval_uauc %.4f", metrics.get("eval_auc", float("nan")), metrics.get("eval_uauc", float("nan")))
    if PartialState().is_main_process:
        print(json.dumps(metrics, default=float))  # the CLI's answer, on stdout
    return 0


def pipeline_command(args: argparse.Namespace) -> int:
    """``cl3mrec pipeline --config configs/smoke.yaml``: synthetic data → CF → tiny LLM → stages → reload check.

    The results JSON is the last line of stdout; everything printed on the way (Trainer's metric dumps and
    log dicts) goes to stderr."""
    with contextlib.redirect_stdout(sys.stderr):
        results = run_pipeline(args.config, args.out_dir)
    if PartialState().is_main_process:
        print(json.dumps(results))  # the CLI's answer, on stdout
    return 0 if results.get("reload_identical", True) else 1


def register(subparsers) -> None:
    """Add ``train`` and ``pipeline`` to the ``cl3mrec`` CLI."""
    train = subparsers.add_parser(
        "train",
        help="Run one CL3M-Rec training stage from a YAML config.",
        description="Run one CL3M-Rec training stage. Every argument below is a key of the --config YAML (which may "
        "name a 'base:' YAML to inherit from) or an override after it: key=value or --key value.",
        epilog=arguments_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("--config", required=True, help="YAML with ModelArguments/DataArguments/TrainingArguments fields")
    train.add_argument("overrides", nargs=argparse.REMAINDER, help="key=value or --key value overrides")
    train.set_defaults(func=train_command)
    pipeline = subparsers.add_parser("pipeline", help="Run the whole recipe end to end (smoke test).")
    pipeline.add_argument("--config", required=True, help="pipeline YAML, e.g. configs/smoke.yaml")
    pipeline.add_argument(
        "--out-dir", help="the YAML's out_dir replaced (stages' own export_dir / logging_dir stay as set)"
    )
    pipeline.set_defaults(func=pipeline_command)
