"""The ``hcae`` command: one subcommand per module in ``hcae.commands``.

Each subcommand module defines ``add_parser(subparsers)`` and ``run(args) -> int``. Subcommand
modules are imported only when chosen, so ``hcae --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from hcae.errors import HcaeError
from hcae.modeling.configuration_hcae import HcaeConfigError

# subcommand name -> module under hcae.commands, in the order the help lists them
SUBCOMMANDS = {
    "describe": "describe",
    "build": "build",
    "eval": "evaluate",
    "train": "train",
    "ablate": "ablate",
    "report": "report",
    "ui": "ui",
}

SUMMARIES = {
    "describe": "print the layer list and parameter counts of a preset or config",
    "build": "write a randomly initialised model as a sentence-transformers folder",
    "eval": "evaluate a model on MTEB tasks read from the local data folder",
    "train": "train one model from a run config",
    "ablate": "run or resume an Optuna study of train-and-eval trials",
    "report": "write a study's tables and figures as Markdown and PNG files",
    "ui": "start the MLflow UI on 127.0.0.1 for the local tracking store",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hcae",
        description="Hybrid Convolutional-Attention Encoders: build, train, evaluate and compare.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        # the real parser is filled in lazily by the chosen module
        subparsers.add_parser(name, help=SUMMARIES[name], add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    top_parser = build_parser()
    known, rest = top_parser.parse_known_args(argv)

    module = importlib.import_module(f"hcae.commands.{SUBCOMMANDS[known.command]}")
    sub_parser = argparse.ArgumentParser(prog=f"hcae {known.command}", description=SUMMARIES[known.command])
    module.add_arguments(sub_parser)
    args = sub_parser.parse_args(rest)

    logging.basicConfig(
        level=logging.DEBUG if known.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(module.run(args) or 0)
    except (HcaeError, HcaeConfigError) as error:
        print(f"hcae {known.command}: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader (for example `head`) closed the pipe: stop quietly, as other CLI tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"hcae {known.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
