"""Run mteb tasks on a model and assemble scores, confidence intervals, timings and per-item values."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Sequence
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any

import mteb
from mteb.abstasks.abstask import AbsTask
from sentence_transformers import SentenceTransformer

from hcae import data as hcae_data
from hcae.errors import RunConfigError
from hcae.evaluation.bootstrap import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    CONFIDENCE,
    mean_confidence_interval,
    spearman_confidence_interval,
)
from hcae.evaluation.encoder import PRECISIONS, CorpusReusingEncoder, EncodeStats, load_model, resolve_model_source
from hcae.evaluation.tasks import (
    SCIFACT_SPLITS,
    STSB_SPLITS,
    LocalSciFact,
    LocalSTSBenchmark,
    build_scifact_task,
    build_stsb_task,
)

logger = logging.getLogger(__name__)

TASK_NAMES = ("STSBenchmark", "SciFact")
SPLITS = ("dev", "test")
MAIN_SCORE_NAMES = {"STSBenchmark": "cosine_spearman", "SciFact": "ndcg_at_10"}
RESULTS_FILE_NAME = "results.json"


def validate_task_names(tasks: Sequence[str]) -> list[str]:
    """Return the task names without repeats, raising RunConfigError for an unknown or empty list."""
    unknown = [name for name in tasks if name not in TASK_NAMES]
    if unknown:
        raise RunConfigError(f"Unknown task {', '.join(map(repr, unknown))}: valid tasks are {', '.join(TASK_NAMES)}.")
    if not tasks:
        raise RunConfigError(f"No task given: choose from {', '.join(TASK_NAMES)}.")
    return list(dict.fromkeys(tasks))


def validate_splits(splits: Sequence[str]) -> list[str]:
    """Return the split names without repeats, raising RunConfigError for an unknown or empty list."""
    unknown = [name for name in splits if name not in SPLITS]
    if unknown or not splits:
        raise RunConfigError(
            f"Invalid splits {list(splits)!r}: choose one or both of {', '.join(SPLITS)} (dev = STS Benchmark "
            "validation and the SciFact dev slice of train queries, test = MTEB's test splits)."
        )
    return list(dict.fromkeys(splits))


def _package_versions() -> dict[str, str]:
    versions = {}
    for package in ("hcae", "mteb", "sentence-transformers", "transformers", "torch", "numpy"):
        try:
            versions[package] = package_metadata.version(package)
        except package_metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _summarize_sts(task: LocalSTSBenchmark, scores: dict[str, Any], mteb_split: str, bootstrap: dict[str, Any]) -> dict[str, Any]:
    items = task.per_item[mteb_split]
    low, high = spearman_confidence_interval(
        items["cosine"], items["gold"], resamples=bootstrap["resamples"], seed=bootstrap["seed"], confidence=bootstrap["confidence"]
    )
    return {
        "mteb_split": mteb_split,
        "main_score": scores["main_score"],
        "cosine_spearman": scores["cosine_spearman"],
        "cosine_pearson": scores["cosine_pearson"],
        "ci95": [low, high],
        "num_items": len(items["cosine"]),
        # row i is line i+1 of stsb/<split>.jsonl
        "per_item": {"pair_index": list(range(len(items["cosine"]))), "cosine": items["cosine"], "gold": items["gold"]},
    }


def _summarize_scifact(task: LocalSciFact, scores: dict[str, Any], mteb_split: str, bootstrap: dict[str, Any]) -> dict[str, Any]:
    items = task.per_item[mteb_split]
    low, high = mean_confidence_interval(
        items["ndcg_at_10"], resamples=bootstrap["resamples"], seed=bootstrap["seed"], confidence=bootstrap["confidence"]
    )
    return {
        "mteb_split": mteb_split,
        "main_score": scores["main_score"],
        "ndcg_at_10": scores["ndcg_at_10"],
        "recall_at_10": scores["recall_at_10"],
        "mrr_at_10": scores["mrr_at_10"],
        "ci95": [low, high],
        "num_items": len(items["query_ids"]),
        "per_item": dict(items),
    }


def run_tasks(
    model: SentenceTransformer,
    tasks: Sequence[AbsTask],
    *,
    cache_dir: Path,
    precision: str = "float32",
    batch_size: int = 32,
    show_progress_bar: bool = True,
    bootstrap_resamples: int = BOOTSTRAP_RESAMPLES,
    bootstrap_seed: int = BOOTSTRAP_SEED,
) -> dict[str, dict[str, Any]]:
    """Evaluate a model on hcae's local mteb tasks with ``mteb.evaluate``; return one summary per task.

    mteb writes its result files under ``cache_dir``. Each summary has the metrics, bootstrap
    interval and per-item values of every evaluated split under ``"splits"`` (keyed ``dev`` or
    ``test``), plus wall time and encode throughput.
    """
    encoder = CorpusReusingEncoder(model, precision=precision)
    bootstrap = {"resamples": bootstrap_resamples, "seed": bootstrap_seed, "confidence": CONFIDENCE}
    summaries = {}
    for task in tasks:
        name = task.metadata.name
        # read before evaluating: mteb restores the class metadata when it unloads the task's data
        data_revision = task.metadata.dataset["revision"]
        start = time.perf_counter()
        model_result = mteb.evaluate(
            encoder,
            [task],
            cache=mteb.ResultCache(cache_dir),
            overwrite_strategy="always",
            encode_kwargs={"batch_size": batch_size, "show_progress_bar": show_progress_bar},
            show_progress_bar=show_progress_bar,
        )
        wall_seconds = time.perf_counter() - start
        task_result = model_result.task_results[0]

        split_names = STSB_SPLITS if isinstance(task, LocalSTSBenchmark) else SCIFACT_SPLITS
        splits = {}
        for split, mteb_split in split_names.items():
            if mteb_split not in task_result.scores:
                continue
            scores = task_result.scores[mteb_split][0]
            if isinstance(task, LocalSTSBenchmark):
                splits[split] = _summarize_sts(task, scores, mteb_split, bootstrap)
            else:
                splits[split] = _summarize_scifact(task, scores, mteb_split, bootstrap)

        stats = encoder.stats.get(name, EncodeStats())
        summary: dict[str, Any] = {}
        if "test" in splits:
            # the task-level metrics are MTEB's: the test split
            summary.update({key: value for key, value in splits["test"].items() if key != "per_item"})
        summary.update({
            "main_score_name": MAIN_SCORE_NAMES[name],
            "data_revision": data_revision,
            "wall_seconds": wall_seconds,
            "encode_seconds": stats.seconds,
            "texts_encoded": stats.texts,
            "texts_per_second": stats.texts_per_second,
            "reused_corpus_encodings": stats.reused_document_sets,
            "splits": splits,
        })
        summaries[name] = summary
        logger.info("%s finished in %.1f s (%d texts encoded in %.1f s)", name, wall_seconds, stats.texts, stats.seconds)
    return summaries


def evaluate_model(
    model: SentenceTransformer | str | Path,
    tasks: Sequence[str] = TASK_NAMES,
    splits: Sequence[str] = SPLITS,
    *,
    data_dir: str | Path | None = None,
    output_dir: str | Path | None = None,
    precision: str = "float32",
    batch_size: int = 32,
    device: str | None = None,
    verify_data: bool = True,
    scifact_dev_size: int = hcae_data.SCIFACT_DEV_QUERIES,
    scifact_dev_seed: int = hcae_data.SCIFACT_DEV_SEED,
    bootstrap_resamples: int = BOOTSTRAP_RESAMPLES,
    bootstrap_seed: int = BOOTSTRAP_SEED,
    show_progress_bar: bool = True,
) -> dict[str, Any]:
    """Evaluate a model on STSBenchmark and SciFact from the local data folder.

    Args:
        model: a SentenceTransformer, a model folder, or ``all-MiniLM-L6-v2``.
        tasks: any of ``STSBenchmark`` and ``SciFact``.
        splits: ``dev`` (STS Benchmark validation; the SciFact dev slice of train queries against
            the full corpus) and/or ``test`` (MTEB's test splits). Model selection uses ``dev``.
        data_dir: the data folder (default ``$HCAE_DATA_DIR``, else ``./data``).
        output_dir: if given, mteb's result files go to ``output_dir/mteb`` and the returned
            dict to ``output_dir/results.json``, both written only after every task finished.
            Without it, mteb's files go to a temporary folder that is deleted afterwards.
        precision: ``float32``, or ``bf16`` for bfloat16 autocast while encoding.
        batch_size: texts per encode batch.
        device: torch device for a model loaded here (default: sentence-transformers' choice).
        verify_data: compare data files with the manifest's sha256 and row counts before parsing.
        scifact_dev_size, scifact_dev_seed: the SciFact dev slice (see
            :func:`hcae.data.split_scifact_train_queries`).
        bootstrap_resamples, bootstrap_seed: the percentile bootstrap behind each ``ci95``.
        show_progress_bar: show mteb's and sentence-transformers' progress bars.

    Documents are encoded at the model's ``max_seq_length`` (256 tokens for all-MiniLM-L6-v2);
    longer abstracts are truncated, as in MTEB. With both splits, SciFact's corpus is encoded once.

    Returns:
        ``{"model": ..., "tasks": {"STSBenchmark": {...}, "SciFact": {...}}, ...}``. A task's
        top-level metrics (``main_score``, ``ci95``, ...) are those of the test split, when it
        was evaluated. Every evaluated split, with its per-item values, is under the task's
        ``"splits"`` key.
    """
    task_names = validate_task_names(tasks)
    split_names = validate_splits(splits)
    if precision not in PRECISIONS:
        raise RunConfigError(f"Unknown precision {precision!r}: valid values are {', '.join(PRECISIONS)}.")
    if batch_size < 1:
        raise RunConfigError(f"Batch size must be at least 1, got {batch_size}.")
    started = time.perf_counter()

    # cheap checks of the model argument come before data loading, and loading the weights after
    model_path = None
    if not isinstance(model, SentenceTransformer):
        model_path = resolve_model_source(model).path
    root = hcae_data.resolve_data_dir(data_dir)
    mteb_tasks: list[AbsTask] = []
    for name in task_names:
        if name == "STSBenchmark":
            mteb_tasks.append(build_stsb_task(split_names, root, verify=verify_data))
        else:
            mteb_tasks.append(
                build_scifact_task(split_names, root, dev_size=scifact_dev_size, dev_seed=scifact_dev_seed, verify=verify_data)
            )
    if not isinstance(model, SentenceTransformer):
        model = load_model(model, device=device)
    if not model.model_card_data.model_name:
        model.model_card_data.model_name = "unnamed-model"
        logger.warning("the model has no name; mteb files its results under 'unnamed-model'")

    with tempfile.TemporaryDirectory(prefix="hcae-mteb-") as scratch:
        if output_dir is None:
            cache_dir = Path(scratch)
        else:
            # mteb writes here while running; the folder is renamed to mteb/ once every task is done
            cache_dir = Path(output_dir) / "mteb-incomplete"
            shutil.rmtree(cache_dir, ignore_errors=True)
        summaries = run_tasks(
            model,
            mteb_tasks,
            cache_dir=cache_dir,
            precision=precision,
            batch_size=batch_size,
            show_progress_bar=show_progress_bar,
            bootstrap_resamples=bootstrap_resamples,
            bootstrap_seed=bootstrap_seed,
        )

    result: dict[str, Any] = {
        "model": model.model_card_data.model_name,
        "model_path": str(model_path) if model_path is not None else None,
        "max_seq_length": model.max_seq_length,
        "prompts": dict(model.prompts or {}),
        "precision": precision,
        "batch_size": batch_size,
        "device": str(model.device),
        "splits": split_names,
        "data_dir": str(root.resolve()),
        "scifact_dev": {"queries": scifact_dev_size, "seed": scifact_dev_seed} if "dev" in split_names else None,
        "bootstrap": {"method": "percentile", "resamples": bootstrap_resamples, "seed": bootstrap_seed, "confidence": CONFIDENCE},
        "versions": _package_versions(),
        "mteb_results_dir": None,
        "wall_seconds": time.perf_counter() - started,
        "tasks": summaries,
    }
    if output_dir is not None:
        final_dir = Path(output_dir) / "mteb"
        shutil.rmtree(final_dir, ignore_errors=True)
        cache_dir.rename(final_dir)
        result["mteb_results_dir"] = str(final_dir.resolve())
        write_results_json(result, Path(output_dir) / RESULTS_FILE_NAME)
    return result


def split_main_scores(result: dict[str, Any], split: str = "dev") -> dict[str, float]:
    """Return task name -> main score of one split of an evaluation result (for model selection)."""
    return {
        task_name: task["splits"][split]["main_score"]
        for task_name, task in result["tasks"].items()
        if split in task["splits"]
    }


def write_results_json(result: dict[str, Any], path: Path) -> None:
    """Write an evaluation result as JSON through a temporary file and a rename."""
    hcae_data.write_text_atomic(path, json.dumps(result, indent=1) + "\n")


def format_summary_table(result: dict[str, Any]) -> str:
    """Return a plain-text table of every task, split and headline metric in an evaluation result."""
    header = ("task", "split", "metric", "score", "95% CI", "items", "wall s", "texts/s")
    rows = []
    for task_name, task in result["tasks"].items():
        metric_names = [task["main_score_name"]]
        if task_name == "SciFact":
            metric_names += ["recall_at_10", "mrr_at_10"]
        for split_name in SPLITS:
            split = task["splits"].get(split_name)
            if split is None:
                continue
            for metric in metric_names:
                is_main = metric == task["main_score_name"]
                interval = f"[{split['ci95'][0]:.4f}, {split['ci95'][1]:.4f}]" if is_main else ""
                rows.append((
                    task_name,
                    split_name,
                    metric,
                    f"{split[metric]:.4f}",
                    interval,
                    str(split["num_items"]),
                    f"{task['wall_seconds']:.1f}" if is_main else "",
                    f"{task['texts_per_second']:.0f}" if is_main else "",
                ))
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)
