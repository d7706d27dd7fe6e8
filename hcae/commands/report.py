"""``hcae report``: a finished study's tables and figures as Markdown plus PNG files."""

from __future__ import annotations

import argparse
from pathlib import Path

from hcae.errors import HcaeError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", type=Path, help="the study YAML file; its report section lists the comparisons")
    parser.add_argument(
        "--out", type=Path,
        help="output folder, or a .md file whose figures go to the folder of the same name (default: docs/results/<study name>)",
    )
    parser.add_argument("--notes", type=Path, help="a Markdown file placed after the title, for a written discussion")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else mlruns/ beside ablations/)")
    parser.add_argument("--speed", type=Path, help="encode benchmark JSON for the quality-versus-speed figure")
    parser.add_argument("--resamples", type=int, default=5000, help="bootstrap resamples per comparison (default 5000)")
    parser.add_argument("--title", help="report title (default: the study name)")


def run(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")  # files only: no window, whatever display the shell has
    from hcae.report import StudyAnalysis, default_tracking_uri_for, load_report_plan, load_speed_ratios, write_report

    name, plan = load_report_plan(args.study)
    tracking_uri = args.tracking_uri or default_tracking_uri_for(args.study)
    try:
        analysis = StudyAnalysis.load(name, tracking_uri)
    except LookupError as error:
        raise HcaeError(f"cannot report study {name!r}: {error}; run `hcae ablate {args.study}` first") from None
    if args.speed is not None and not args.speed.is_file():
        raise HcaeError(f"--speed {args.speed} does not exist; run benchmarks/encode.py --out {args.speed} first")
    if args.notes is not None and not args.notes.is_file():
        raise HcaeError(f"--notes {args.notes} does not exist; give a Markdown file or leave the option out")
    notes = args.notes.read_text() if args.notes is not None else None
    out = args.out or Path("docs") / "results" / name
    speed = load_speed_ratios(args.speed, plan)
    path = write_report(analysis, plan, out, args.title or f"Study {name}", speed, args.resamples, notes)
    print(f"wrote {path} and its figures")
    return 0
