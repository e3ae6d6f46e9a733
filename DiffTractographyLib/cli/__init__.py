"""The ``difftract`` command line: ``difftract <command> --help`` for each command.

Each command lives in its own module with ``add_parser(subparsers)`` and ``run(args) -> int``.
Bad input ends with one ``difftract: error: ...`` line and exit status 2; nothing is half-written.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import InputError

COMMANDS = ("track", "fit", "cluster", "select")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="difftract",
        description="Differentiable, GPU-batched diffusion MRI tractography. Coordinates are RAS mm "
                    "(the world space of the NIfTI affine) throughout.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f".{name}", __name__).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except InputError as exc:
        print(f"difftract: error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        print(f"difftract: error: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("difftract: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print("difftract: error: out of memory; lower --chunk-size or the number of seeds", file=sys.stderr)
        return 1
