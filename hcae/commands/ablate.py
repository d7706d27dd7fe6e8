"""``hcae ablate``: run or resume an Optuna study of train-and-evaluate trials.

Examples::

    hcae ablate ablations/v1_0_vs_v1_1.yaml                    # run, or resume where it stopped
    hcae ablate ablations/v1_0_vs_v1_1.yaml --profile smoke    # a wiring check, as study v1_0_vs_v1_1-smoke
    hcae ablate ablations/v1_0_vs_v1_1.yaml --workers 2        # two processes share the queue
    hcae ablate ablations/v1_0_vs_v1_1.yaml --retry-failed     # also rerun points that failed

Exit status: 0 when every point is complete, 1 when some point failed or is missing, 2 on an
invalid study file or option, 128 + the signal number after SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hcae.data import DATA_DIR_ENV
from hcae.run_config import PROFILES
from hcae.study import StudyInterrupted, StudyOptions, load_study_spec, run_study
from hcae.study.runner import DEFAULT_HEARTBEAT_INTERVAL_S


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study_file", metavar="STUDY.yaml", type=Path, help="the study file: a base run config and a grid or search")
    parser.add_argument(
        "--profile", choices=sorted(PROFILES),
        help="run every trial with this budget profile instead of the file's; the study name gets the suffix "
        "-PROFILE so that, for example, smoke trials never count as points of the real study",
    )
    parser.add_argument("--study-name", metavar="NAME", help="Optuna study and MLflow parent run name (default: the file's 'study' key)")
    parser.add_argument(
        "--storage", metavar="URL_OR_FILE",
        help="Optuna storage: an RDB URL (sqlite:///..., postgresql://...) shared by workers on several machines, "
        "or a journal file ending in .log (default: sqlite:///mlruns/optuna.db)",
    )
    parser.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else mlruns/mlflow.db)")
    parser.add_argument(
        "--workers", type=int, default=1, metavar="N",
        help="worker processes that take queued trials; each uses cores // N torch threads (default: 1)",
    )
    parser.add_argument(
        "--in-process", action="store_true",
        help="run the trials one after another in this process, so that a debugger stops in them "
        "(default: a fresh worker process per trial)",
    )
    parser.add_argument("--retry-failed", action="store_true", help="queue again the points whose latest trial failed")
    parser.add_argument(
        "--output-dir", type=Path, metavar="DIR",
        help="folder for the trials' models and results (default: runs/studies/STUDY)",
    )
    parser.add_argument("--data-dir", type=Path, metavar="DIR", help=f"data folder of every trial (default: ${DATA_DIR_ENV}, else ./data)")
    parser.add_argument(
        "--heartbeat-interval", type=int, default=DEFAULT_HEARTBEAT_INTERVAL_S, metavar="SECONDS",
        help="seconds between heartbeats of running trials on an RDB storage; a trial silent for 4 intervals "
        f"counts as interrupted, which catches workers of other machines that died; 0 turns it off "
        f"(default: {DEFAULT_HEARTBEAT_INTERVAL_S})",
    )
    parser.add_argument("--check", action="store_true", help="validate the study file and every variant's run config, then exit")


def run(args: argparse.Namespace) -> int:
    spec = load_study_spec(args.study_file, profile=args.profile, study_name=args.study_name, data_dir=args.data_dir)
    if args.check:
        points = len(spec.grid_points()) if spec.search is None else spec.search.trials
        print(f"{spec.source}: study {spec.name} is valid ({spec.mode}, {points} points, profile {spec.profile})")
        return 0

    options = StudyOptions(
        storage=args.storage,
        tracking_uri=args.tracking_uri,
        workers=args.workers,
        retry_failed=args.retry_failed,
        output_dir=args.output_dir,
        heartbeat_interval=args.heartbeat_interval,
        in_process=args.in_process,
    )
    try:
        result = run_study(spec, options)
    except StudyInterrupted as interrupt:
        if interrupt.result is not None:
            print(interrupt.result.format_summary(), flush=True)
        print(f"hcae ablate: stopped by {interrupt.signal_name}; run the same command again to resume", flush=True)
        return interrupt.exit_code
    print(result.format_summary(), flush=True)
    return result.exit_code
