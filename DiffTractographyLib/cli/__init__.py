"""The ``difftract`` command line: ``difftract <command> --help`` for each command.

Each command lives in its own module with ``add_parser(subparsers)`` and ``run(args) -> int``.
Bad input ends with one ``difftract: error: ...`` line and exit status 2; nothing is half-written.
"""
from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
import warnings

# One BLAS thread: the tracking kernels use every core, and a multi-threaded BLAS call (numpy's
# matrix products, before any work) leaves its threads spinning on those cores. Set before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# Idle OpenMP workers sleep instead of spinning: torch (fits, refits) and the numba kernels alternate
# in one process, and spinning workers of one starve the other (CSD refits 9x slower on a busy
# 2-core machine). Set before torch loads; an explicit OMP_WAIT_POLICY wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ..errors import InputError

COMMANDS = {
    "track": "track streamlines from seeds",
    "fit": "fit DTI or CSD to a DWI and write NIfTI maps",
    "cluster": "cluster streamlines with QuickBundles",
    "select": "select streamlines with regions of interest (tckedit) and lesion distances",
    "density": "streamline density map on an image grid (tckmap)",
    "envelope": "uncertainty envelope of a bundle: repeated tracking, visitation and lesion distances",
    "batch": "a BIDS dataset on Dask: fit, track and cluster every participant (BIDS App)",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser, with the full options of ``command`` only: the other commands' modules (and
    torch) are not imported, so ``difftract --help`` answers at once."""
    parser = argparse.ArgumentParser(
        prog="difftract",
        description="Differentiable, GPU-batched diffusion MRI tractography. Coordinates are RAS mm "
                    "(the world space of the NIfTI affine) throughout.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, summary in COMMANDS.items():
        if name == command:
            importlib.import_module(f".{name}", __name__).add_parser(sub)
        else:
            sub.add_parser(name, help=summary, add_help=False)
    return parser


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line each, without the source line Python shows by default."""
    print(f"difftract: warning: {message}", file=sys.stderr)


#: options whose value is a list of numbers, which may start with a minus sign
NUMBER_LISTS = ("--seed-sphere", "--seed-direction")


def _numeric_lists_as_values(argv: list[str]) -> list[str]:
    """``--seed-sphere -20,5,3,4`` as ``--seed-sphere=-20,5,3,4``: argparse takes a value that starts
    with a minus sign and is not a plain number for an option, not for the value of the option before."""
    out: list[str] = []
    for arg in argv:
        if arg == "--" or "--" in out:
            out.append(arg)
        elif out and out[-1] in NUMBER_LISTS and re.match(r"-\.?\d", arg):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = _numeric_lists_as_values(sys.argv[1:] if argv is None else list(argv))
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command if command in COMMANDS else None).parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _warning_line
            return int(args.run(args) or 0)
    except InputError as exc:
        print(f"difftract: error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        print(f"difftract: error: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    except OSError as exc:  # the system's: a full disk, a file too large, a lost mount
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"difftract: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("difftract: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        advice = "; lower --chunk-size or the number of seeds" if hasattr(args, "chunk_size") else ""
        print(f"difftract: error: out of memory{advice}", file=sys.stderr)
        return 1
