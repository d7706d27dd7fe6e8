"""Tracked runs: train, save, evaluate and log one run config to MLflow.

A run folder contains ``run.yaml`` (the resolved config), ``model/`` (a sentence-transformers
folder with safetensors weights), ``eval/`` (the evaluation JSON with per-item values and mteb's
own result files) and ``metrics.json``. Each is written under a temporary name and renamed when
complete, so a folder never contains a file that looks finished but is not.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from hcae.data import write_text_atomic
from hcae.inspection import count_parameters
from hcae.run_config import RunConfig, flatten
from hcae.tracking import NullTracker, Tracker, TrackingStore, environment_tags
from hcae.training.datasets import load_teacher
from hcae.training.recipe import train

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"

# short metric names for the scores of each task and split
_TASK_METRICS = {
    "STSBenchmark": {"main_score": "stsb_spearman"},
    "SciFact": {"ndcg_at_10": "scifact_ndcg_at_10", "recall_at_10": "scifact_recall_at_10", "mrr_at_10": "scifact_mrr_at_10"},
}


def metrics_from_results(results: dict[str, Any]) -> dict[str, float]:
    """Flatten an evaluation result into MLflow metrics such as ``test/stsb_spearman`` and its
    ``test/stsb_spearman_ci_low``/``_ci_high``, plus ``dev/mean`` (the mean of the dev main scores)."""
    metrics: dict[str, float] = {}
    for task, task_result in results["tasks"].items():
        names = _TASK_METRICS.get(task, {})
        main_name = next(iter(names.values()), task.lower())
        for split, split_result in task_result.get("splits", {}).items():
            for key, short in names.items():
                if key in split_result:
                    metrics[f"{split}/{short}"] = float(split_result[key])
            low, high = split_result["ci95"]
            metrics[f"{split}/{main_name}_ci_low"] = float(low)
            metrics[f"{split}/{main_name}_ci_high"] = float(high)
        metrics[f"eval/{main_name.split('_')[0]}_texts_per_second"] = float(task_result.get("texts_per_second", 0.0))
        metrics[f"eval/{main_name.split('_')[0]}_seconds"] = float(task_result.get("wall_seconds", 0.0))

    dev_main = [metrics[key] for key in ("dev/stsb_spearman", "dev/scifact_ndcg_at_10") if key in metrics]
    if dev_main:
        metrics["dev/mean"] = sum(dev_main) / len(dev_main)
    test_main = [metrics[key] for key in ("test/stsb_spearman", "test/scifact_ndcg_at_10") if key in metrics]
    if test_main:
        metrics["test/mean"] = sum(test_main) / len(test_main)
    return metrics


def train_and_evaluate(
    run: RunConfig,
    output_dir: str | Path,
    tracker: Tracker | None = None,
    reporter: Callable[[float, int], None] | None = None,
) -> dict[str, float]:
    """Train a run config, save the model, evaluate it on dev and test, and log it all.

    Args:
        run: the run config.
        output_dir: the run folder (see the module docstring); created if missing.
        tracker: receives parameters, per-step and final metrics, and artifacts.
        reporter: passed to `train`, for pruning on dev scores.

    Returns:
        The final metrics: dev and test scores with confidence intervals, timings and sizes.
    """
    from hcae.evaluation import evaluate_model

    tracker = tracker or NullTracker()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(output_dir / "run.yaml", yaml.safe_dump(run.to_dict(), sort_keys=False))

    if run.architecture == "teacher":
        # the control evaluated as is: nothing to train and nothing new to save
        embedder = load_teacher(run.training.teacher)
        summary: dict[str, Any] = {"stages": {}, "init": {"init": "pretrained"}, "train_seconds": 0.0, "dev_curve": []}
        model_dir = None
    else:
        embedder, summary = train(run, tracker, reporter)
        model_dir = output_dir / "model"
        partial = output_dir / "model.partial"
        shutil.rmtree(partial, ignore_errors=True)
        embedder.save(str(partial))
        shutil.rmtree(model_dir, ignore_errors=True)
        partial.rename(model_dir)
    counts = _parameter_counts(run, embedder)

    evaluation = run.evaluation
    results = evaluate_model(
        embedder,
        evaluation.tasks,
        evaluation.splits,
        data_dir=run.data_dir,
        output_dir=output_dir / "eval",
        precision=evaluation.precision,
        batch_size=evaluation.batch_size,
    )

    metrics = metrics_from_results(results)
    metrics.update({
        "params/total": counts["total_params"],
        "params/non_embedding": counts["non_embedding_params"],
        "time/train_seconds": summary["train_seconds"],
        "time/eval_seconds": results["wall_seconds"],
        "time/total_seconds": summary["train_seconds"] + results["wall_seconds"],
    })
    for stage, info in summary["stages"].items():
        metrics[f"time/{stage}_seconds"] = info["seconds"]
        metrics[f"train/{stage}_samples_per_second"] = info["steps"] * _stage_batch(run, stage) / max(info["seconds"], 1e-9)

    tracker.log_metrics(metrics)
    tracker.log_dict({"summary": summary, "parameter_counts": counts}, "train_summary.json")
    tracker.log_artifact(output_dir / "eval" / "results.json", "eval")
    if model_dir is not None:
        tracker.log_artifact(model_dir, "model")
    write_text_atomic(output_dir / METRICS_FILE, json.dumps(metrics, indent=1, sort_keys=True) + "\n")
    return metrics


def _parameter_counts(run: RunConfig, embedder: Any) -> dict[str, Any]:
    if run.architecture == "hcae":
        return count_parameters(run.model_config())
    total = sum(parameter.numel() for parameter in embedder.parameters())
    # the static bag and the teacher's token table are their embedding parameters
    embedding = embedder[0].model.embeddings.word_embeddings.weight.numel() if run.architecture == "teacher" else total
    return {"total_params": total, "embedding_params": embedding, "non_embedding_params": total - embedding}


def _stage_batch(run: RunConfig, stage: str) -> int:
    return getattr(run.training, stage).batch_size


def run_tags(run: RunConfig) -> dict[str, str]:
    """Return the tags that make a run easy to filter in the MLflow UI."""
    common = {
        "hcae.architecture": run.architecture,
        "hcae.profile": run.profile,
        "hcae.seed": str(run.seed),
        "hcae.fingerprint": run.fingerprint(),
        "hcae.uses_scifact_eval_corpus": str(run.training.distill.use_scifact_eval_corpus).lower(),
    }
    if run.architecture != "hcae":
        return {**common, "hcae.layers": run.architecture, "hcae.init": run.training.init}
    config = run.model_config()
    return {
        **common,
        "hcae.layers": config.layer_summary(),
        "hcae.feed_forward": config.feed_forward,
        "hcae.layer_scale_init": str(config.layer_scale_init),
        "hcae.prefixes": str(bool(config.prompts)).lower(),
        "hcae.init": run.training.init,
    }


def run_tracked(
    run: RunConfig,
    store: TrackingStore,
    output_dir: str | Path,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
    reporter: Callable[[float, int], None] | None = None,
    on_start: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """Run `train_and_evaluate` inside a new MLflow run and close that run with the outcome.

    ``on_start`` is called with the MLflow run id as soon as the run exists, before training, so
    a scheduler can record it (and mark the run KILLED later if this process dies).

    The run gets the flattened config as parameters, the YAML as an artifact, the environment
    (git commit and dirty flag, package versions, CPU/GPU) and `run_tags` as tags. It closes as
    FINISHED; as FAILED with an ``hcae.error`` tag when an exception escapes; and as KILLED on
    KeyboardInterrupt or SystemExit. The exception is re-raised in both cases.
    """
    output_dir = Path(output_dir)
    all_tags = {**environment_tags(), **run_tags(run), "hcae.run_dir": str(output_dir.resolve()), **(tags or {})}
    tracker = store.start_run(run.display_name(), tags=all_tags, parent_run_id=parent_run_id)
    logger.info("MLflow run %s (%s) started; files in %s", tracker.run_id, run.display_name(), output_dir)
    try:
        if on_start is not None:
            on_start(tracker.run_id)
        tracker.log_params(flatten(run.to_dict()))
        tracker.log_dict(run.to_dict(), "run.yaml")
        started = time.perf_counter()
        metrics = train_and_evaluate(run, output_dir, tracker, reporter)
        logger.info("run %s finished in %.1f min", tracker.run_id, (time.perf_counter() - started) / 60)
    except (KeyboardInterrupt, SystemExit):
        tracker.set_tags({"hcae.error": "interrupted"})
        tracker.finish("KILLED")
        raise
    except BaseException as error:
        tracker.set_tags({"hcae.error": f"{type(error).__name__}: {error}"[:5000]})
        tracker.finish("FAILED")
        raise
    tracker.finish("FINISHED")
    return metrics
