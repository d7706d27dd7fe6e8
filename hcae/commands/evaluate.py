"""``hcae eval``: evaluate a model on MTEB's STSBenchmark and SciFact from the local data folder.

Examples::

    hcae eval all-MiniLM-L6-v2 --tasks STSBenchmark SciFact --json minilm.json
    hcae eval runs/train/my-model --splits dev test --precision bf16 --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

from hcae.data import DATA_DIR_ENV, SCIFACT_DEV_QUERIES, SCIFACT_DEV_SEED
from hcae.evaluation import (
    SPLITS,
    TASK_NAMES,
    evaluate_model,
    format_summary_table,
    resolve_model_source,
    write_results_json,
)
from hcae.evaluation.encoder import PRECISIONS
from hcae.evaluation.runner import RESULTS_FILE_NAME


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="a model folder (hcae or any sentence-transformers model) or the name all-MiniLM-L6-v2",
    )
    parser.add_argument(
        "--tasks", nargs="+", default=list(TASK_NAMES), metavar="TASK",
        help=f"tasks to run (default: {' '.join(TASK_NAMES)})",
    )
    parser.add_argument(
        "--splits", nargs="+", default=["test"], metavar="SPLIT",
        help=f"splits to score, from {', '.join(SPLITS)} (default: test). dev is STS Benchmark validation and "
        "a seeded slice of SciFact train queries, the sets for model selection",
    )

    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the results JSON to this file")
    parser.add_argument(
        "--output-dir", type=Path, metavar="DIR",
        help="folder for results.json and mteb's result files (default: runs/eval/MODEL-TIMESTAMP)",
    )
    parser.add_argument(
        "--data-dir", type=Path, metavar="DIR",
        help=f"data folder with stsb/ and scifact/ (default: ${DATA_DIR_ENV}, else ./data)",
    )

    parser.add_argument(
        "--precision", choices=PRECISIONS, default="float32",
        help="float32, or bf16 for bfloat16 autocast while encoding (default: float32)",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="texts per encode batch (default: 32)")
    parser.add_argument("--device", help="torch device, e.g. cpu or cuda (default: sentence-transformers' choice)")

    parser.add_argument(
        "--scifact-dev-queries", type=int, default=SCIFACT_DEV_QUERIES, metavar="N",
        help=f"SciFact train queries in the dev slice (default: {SCIFACT_DEV_QUERIES})",
    )
    parser.add_argument(
        "--scifact-dev-seed", type=int, default=SCIFACT_DEV_SEED, metavar="N",
        help=f"seed that picks the SciFact dev slice (default: {SCIFACT_DEV_SEED})",
    )

    parser.add_argument(
        "--skip-checksums", action="store_true",
        help="do not compare data files with the manifest's sha256 and row counts (rows are still validated); "
        "for a data folder you changed on purpose",
    )


def _default_output_dir(model: str) -> Path:
    name = resolve_model_source(model).name.replace("/", "__")
    stamp = datetime.datetime.now(tz=datetime.UTC).strftime("%Y%m%d-%H%M%S")
    return Path("runs") / "eval" / f"{name}-{stamp}"


def run(args: argparse.Namespace) -> int:
    output_dir = args.output_dir or _default_output_dir(args.model)
    result = evaluate_model(
        args.model,
        args.tasks,
        args.splits,
        data_dir=args.data_dir,
        output_dir=output_dir,
        precision=args.precision,
        batch_size=args.batch_size,
        device=args.device,
        verify_data=not args.skip_checksums,
        scifact_dev_size=args.scifact_dev_queries,
        scifact_dev_seed=args.scifact_dev_seed,
    )
    if args.json is not None:
        write_results_json(result, args.json)

    print()
    print(f"{result['model']} ({result['precision']}, max_seq_length {result['max_seq_length']})")
    print(format_summary_table(result))
    print(f"results: {output_dir / RESULTS_FILE_NAME}" + (f" and {args.json}" if args.json is not None else ""))
    print(f"mteb result files: {result['mteb_results_dir']}")
    return 0
