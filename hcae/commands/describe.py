"""``hcae describe``: the layer list and parameter counts of a preset or config."""

from __future__ import annotations

import argparse
import json

from hcae.inspection import count_parameters, format_description
from hcae.presets import PRESETS, load_model_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        metavar="PRESET_OR_CONFIG",
        help=f"a preset ({', '.join(PRESETS)}), a model/run YAML file, a config.json or a saved model folder",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def run(args: argparse.Namespace) -> int:
    config = load_model_config(args.model)
    counts = count_parameters(config)
    if args.json:
        print(json.dumps({"model": args.model, **counts}, indent=2))
    else:
        print(f"HCAE {args.model}")
        print(format_description(counts))
    return 0
