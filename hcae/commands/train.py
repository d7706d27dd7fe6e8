"""``hcae train``: train and evaluate one run config, tracked in MLflow."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from hcae.run_config import PROFILES, load_run_config
from hcae.tracking import TrackingStore


def _override(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"invalid --set {text!r}: write KEY=VALUE, for example training.distill.steps=200")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="run config YAML (sections model, training, evaluation)")
    parser.add_argument("--profile", choices=sorted(PROFILES), help="override the file's profile")
    parser.add_argument("--seed", type=int, help="override the file's seed")
    parser.add_argument("--data-dir", help="data folder (default: $HCAE_DATA_DIR, else ./data)")
    parser.add_argument(
        "--set", dest="overrides", action="append", type=_override, default=[], metavar="KEY=VALUE",
        help="override one setting by its dotted key, for example --set training.distill.steps=200 (repeatable)",
    )
    parser.add_argument("--out", type=Path, help="run folder (default: runs/<run name>)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite in mlruns/)")


def run(args: argparse.Namespace) -> int:
    overrides = dict(args.overrides)
    if args.profile:
        overrides["profile"] = args.profile
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.data_dir:
        overrides["data_dir"] = args.data_dir
    run_config = load_run_config(args.config, overrides)

    from hcae.training import run_tracked

    store = TrackingStore(args.tracking_uri)
    output_dir = args.out or Path("runs") / f"{run_config.display_name()}-{run_config.fingerprint()}"
    metrics = run_tracked(run_config, store, output_dir)
    print(json.dumps({key: round(value, 4) for key, value in sorted(metrics.items())}, indent=1))
    print(f"model: {output_dir / 'model'}   compare runs: hcae ui")
    return 0
