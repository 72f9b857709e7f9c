"""``cl3mrec data ...``: import, prepare, download and generate datasets."""

from __future__ import annotations

import argparse
import json
import logging

from trainers.arg_types import count

logger = logging.getLogger(__name__)


def _check_out(out_dir: str) -> None:
    """Fail fast, before a long import, on an ``--out`` that is a file or a folder of unrelated files."""
    from trainers.atomic_io import require_empty_or_own

    from .builder import DATASET_FILES

    require_empty_or_own(out_dir, DATASET_FILES)


def _log_stats(stats: dict, out_dir: str) -> int:
    logger.info("wrote the dataset to %s\n%s", out_dir, json.dumps(stats, indent=2))
    return 0


def _import_collm(args: argparse.Namespace) -> int:
    _check_out(args.out)
    from .collm_import import import_collm

    stats = import_collm(
        args.out, args.train, args.valid, args.valid_small, args.test, allow_pickle=args.allow_pickle
    )
    return _log_stats(stats, args.out)


def _prepare_ml1m(args: argparse.Namespace) -> int:
    _check_out(args.out)
    from .movielens import prepare_movielens

    stats = prepare_movielens(args.raw_dir, args.out, skip_last_months=args.skip_last_months)
    return _log_stats(stats, args.out)


def _prepare_amazon_book(args: argparse.Namespace) -> int:
    _check_out(args.out)
    from .amazon_book import prepare_amazon_book

    stats = prepare_amazon_book(args.reviews, args.meta, args.out, min_ratings=args.min_ratings)
    return _log_stats(stats, args.out)


def _download(args: argparse.Namespace) -> int:
    from .download import download_dataset

    folder = download_dataset(args.name, args.out, url=args.url)  # a DownloadError is an input error: exit 2
    logger.info("raw files are in %s", folder)
    return 0


def _synthetic(args: argparse.Namespace) -> int:
    _check_out(args.out)
    from .synthetic import generate_synthetic

    stats = generate_synthetic(
        args.out, args.num_users, args.num_items, args.interactions_per_user, seed=args.seed
    )
    return _log_stats(stats, args.out)


def register(subparsers) -> None:
    """Add the ``data`` command and its subcommands to the ``cl3mrec`` parser."""
    data = subparsers.add_parser("data", help="import, prepare, download or generate datasets")
    commands = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")

    parser = commands.add_parser("import-collm", help="import CoLLM's pickled split DataFrames")
    parser.add_argument("--train", required=True, help="CoLLM train pickle (e.g. train_ood2.pkl)")
    parser.add_argument("--valid", required=True, help="CoLLM valid pickle")
    parser.add_argument("--valid-small", help="CoLLM valid_small pickle (default: 50%% sample of valid, seed 2023)")
    parser.add_argument("--test", help="CoLLM test pickle (optional)")
    parser.add_argument("--out", required=True, help="output dataset directory")
    parser.add_argument(
        "--allow-pickle", action="store_true", help="allow unpickling the inputs (runs code from them: trusted files only)"
    )
    parser.set_defaults(func=_import_collm)

    parser = commands.add_parser("prepare-ml1m", help="raw MovieLens-1M → CoLLM time split")
    parser.add_argument("--raw-dir", required=True, help="folder with ratings.dat and movies.dat")
    parser.add_argument("--out", required=True, help="output dataset directory")
    parser.add_argument(
        "--skip-last-months",
        type=count(0),
        default=0,
        help="end the 20-month window this many months before the last one",
    )
    parser.set_defaults(func=_prepare_ml1m)

    parser = commands.add_parser("prepare-amazon-book", help="raw Amazon 2018 Books → CoLLM's Amazon-Book split")
    parser.add_argument("--reviews", required=True, help="Books_5.json.gz")
    parser.add_argument("--meta", required=True, help="meta_Books.json.gz (titles)")
    parser.add_argument("--out", required=True, help="output dataset directory")
    parser.add_argument(
        "--min-ratings", type=count(0), default=20, help="keep users/items with more ratings than this"
    )
    parser.set_defaults(func=_prepare_amazon_book)

    parser = commands.add_parser("download", help="download a raw dataset archive")
    parser.add_argument("name", choices=["ml-1m"], help="dataset to download")
    parser.add_argument("--out", required=True, help="folder to unzip into")
    parser.add_argument("--url", help="override the download URL")
    parser.set_defaults(func=_download)

    parser = commands.add_parser("synthetic", help="generate a small synthetic dataset with a real signal")
    parser.add_argument("--out", required=True, help="output dataset directory")
    parser.add_argument("--num-users", type=count(1), default=200)
    parser.add_argument("--num-items", type=count(1), default=300)
    parser.add_argument("--interactions-per-user", type=count(1), default=40, help="at most --num-items")
    parser.add_argument("--seed", type=count(0), default=0)
    parser.set_defaults(func=_synthetic)
