"""``cl3mrec cf train`` / ``cl3mrec cf tune``: pretrain collaborative encoders from a YAML.

``train`` trains the YAML's fixed hyper-parameters and saves the best-valid model + ``metrics.json`` (with the
data path and its ``stats.json`` source, which the model card names the data set from).
``tune`` runs every combination of the YAML's ``search:`` grid (one seed) and writes ``search.json``
ranked by the selection split's AUC; copy the winner into the YAML by hand.
"""

import argparse
import json
import logging
import sys
from pathlib import Path

from trainers.arg_types import count
from trainers.atomic_io import write_json_atomic
from trainers.cf_training import (
    DEFAULT_MAX_HISTORY,
    apply_overrides,
    data_provenance,
    grid,
    load_cf_data,
    load_cf_yaml,
    save_run,
    train_cf_model,
)

logger = logging.getLogger(__name__)


def _headline(summary: dict) -> dict:
    keys = ("auc", "uauc")
    return {split: {k: summary[split][k] for k in keys} for split in ("valid", "valid_small")}


def _resolve(args: argparse.Namespace) -> tuple[dict, str, Path, int]:
    spec = load_cf_yaml(args.config)
    data = args.data or spec.get("data")
    if not data:
        raise ValueError(f"{args.config}: no 'data' field and no --data given")
    if not args.data and not Path(data).exists():  # the YAML's path is read from the working directory
        raise FileNotFoundError(
            f"{args.config}: data: {data} does not exist under the working directory {Path.cwd()}; run from the "
            "repository root or pass --data DIR (a `cl3mrec data` dataset folder or a CoLLM pickle folder)"
        )
    out = Path(args.out or spec.get("out") or f"runs/cf/{spec['model']['encoder_type']}")
    seed = args.seed if args.seed is not None else spec.get("seed", 42)
    return spec, data, out, seed


def train_command(args: argparse.Namespace) -> int:
    spec, data, out, seed = _resolve(args)
    model_fields, train_args = apply_overrides(spec, {})
    splits, num_users, num_items = load_cf_data(
        data, model_fields.get("max_history", DEFAULT_MAX_HISTORY), allow_pickle=args.allow_pickle
    )
    model, summary = train_cf_model(model_fields, train_args, splits, num_users, num_items, seed, args.config)
    summary.update(config_file=str(args.config), **data_provenance(data))
    save_run(model, summary, out)
    logger.info("saved %s model to %s (best epoch %d)", model_fields["encoder_type"], out, summary["best_epoch"])
    json.dump({"out": str(out), "train_seconds": summary["train_seconds"], **_headline(summary)}, sys.stdout)
    sys.stdout.write("\n")
    return 0


def tune_command(args: argparse.Namespace) -> int:
    spec, data, out, seed = _resolve(args)
    combos = grid(spec.get("search"))
    max_history = max(apply_overrides(spec, combo)[0].get("max_history", DEFAULT_MAX_HISTORY) for combo in combos)
    splits, num_users, num_items = load_cf_data(data, max_history, allow_pickle=args.allow_pickle)
    results = []
    for number, combo in enumerate(combos, 1):
        model_fields, train_args = apply_overrides(spec, combo)
        _, summary = train_cf_model(model_fields, train_args, splits, num_users, num_items, seed, args.config)
        select = train_args["selection_split"]
        results.append({"overrides": combo, "best_epoch": summary["best_epoch"], "selection_split": select,
                        "select_auc": summary[select]["auc"], "train_seconds": summary["train_seconds"],
                        **_headline(summary)})
        logger.info("[%d/%d] %s -> %s AUC %.4f", number, len(combos), combo, select, results[-1]["select_auc"])
    results.sort(key=lambda row: row["select_auc"], reverse=True)
    write_json_atomic(out / "search.json", {"config_file": str(args.config), "seed": seed, "results": results})
    json.dump({"out": str(out / "search.json"), "best": results[0]}, sys.stdout)
    sys.stdout.write("\n")
    return 0


def register(subparsers) -> None:
    """Add ``cf train`` and ``cf tune`` to the ``cl3mrec`` parser."""
    parser = subparsers.add_parser("cf", help="pretrain collaborative-filtering encoders")
    commands = parser.add_subparsers(dest="cf_command", required=True, metavar="CF_COMMAND")
    for name, handler, text in (
        ("train", train_command, "train one CF model from a YAML and save it"),
        ("tune", tune_command, "run the YAML's search grid and rank it on the selection split"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--config", required=True, help="configs/cf/<name>.yaml")
        sub.add_argument("--data", help="dataset dir (stats.json) or CoLLM pickle dir; overrides the YAML")
        sub.add_argument("--out", help="output directory; overrides the YAML")
        sub.add_argument("--seed", type=count(0), help="random seed; overrides the YAML")
        sub.add_argument(
            "--allow-pickle", action="store_true", help="allow unpickling a CoLLM pickle --data dir (trusted files only)"
        )
        sub.set_defaults(func=handler)
