"""The argparse parser and value types shared by the ``cl3mrec`` subcommands, ``scripts/`` and ``benchmarks/``: a bad
command line exits 2 with one ``error:`` line naming the option."""

import argparse


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose refusals are one line on stderr, ``PROG: error: MESSAGE (PROG --help: ...)``, exit
    status 2, instead of the usage block followed by the error; ``--help`` still prints the usage. Subcommand parsers
    made by ``add_subparsers`` are of this class too."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (`{self.prog} --help` lists the options)\n")


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
