"""argparse value types shared by the ``cl3mrec`` subcommands, ``scripts/`` and ``benchmarks/``: a bad value exits 2
with argparse's usage and one ``error:`` line naming the option."""

import argparse


def count(minimum: int):
    """argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {value}")
        return value

    return parse


positive_int = count(1)
