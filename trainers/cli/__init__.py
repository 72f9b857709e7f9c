"""The ``cl3mrec`` command line: one entry point (``main``; ``python -m trainers.cli`` runs it), one subcommand
module per job in this package."""

import importlib
import logging
import sys

from trainers.arg_types import ArgumentParser
from trainers.cpu_allocator import allocator_in_use, restart_with_jemalloc
from trainers.error_report import INTERRUPTED_STATUS, describe, exit_status

# Each module exposes ``register(subparsers)``; it adds its parsers and sets ``func``.
SUBCOMMAND_MODULES = (
    "data_scripts.cli",
    "trainers.cli.cf_cli",
    "trainers.cli.llm_cli",
    "trainers.cli.evaluate_cli",
    "trainers.cli.train_cli",
    "trainers.cli.push_cli",
)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="cl3mrec",
        description="CL3M-Rec: contrastive learning enhanced LLMs for recommendation.",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error (default: one line)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv=None) -> int:
    """Run one command; ``argv=None`` reads the process's own command line, which first restarts itself once with
    jemalloc preloaded when it is installed (:mod:`trainers.cpu_allocator`; ``CL3MREC_ALLOCATOR=system``: off)."""
    if argv is None:
        restart_with_jemalloc()
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("cl3mrec").debug("memory allocator: %s", allocator_in_use())
    try:
        code = int(args.func(args) or 0)
    except KeyboardInterrupt:
        if args.debug:
            raise
        logging.getLogger("cl3mrec").error("interrupted; rerun the same command: finished steps are kept, the rest reruns")
        return INTERRUPTED_STATUS
    except Exception as error:
        if args.debug:
            raise
        # One line naming the file / field and the fix, not a traceback (status 2: bad input, 1: a bug).
        logging.getLogger("cl3mrec").error("%s", describe(error))
        return exit_status(error)
    end_distributed()  # only after success: a failing rank must not wait at a barrier for the others
    return code


def end_distributed() -> None:
    """Destroy the process group of an ``accelerate launch`` / ``torchrun`` run before the interpreter exits;
    left to interpreter teardown, gloo's threads sometimes abort the process ("terminate called without an
    active exception") after the work is done."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # no rank tears down while another still talks to it
        dist.destroy_process_group()

