"""The ``avloc`` command line: parse, build, call one library function, report."""

from __future__ import annotations

import argparse
import logging
import sys

from avloc import __version__
from avloc.types import AvlocError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avloc", description=__doc__)
    parser.add_argument("--version", action="version", version=f"avloc {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        return args.run(args) or 0
    except AvlocError as error:
        print(f"avloc: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("avloc: interrupted", file=sys.stderr)
        return 130
