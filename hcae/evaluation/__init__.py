"""MTEB evaluation on the local data folder: STSBenchmark and SciFact, fully offline.

The tasks are mteb 2.26's own, fed from local files (:mod:`hcae.evaluation.tasks`). Every score
comes with a 95% percentile bootstrap interval and the per-item values behind it, so that later
statistics can compare models pair by pair. The entry point for training code and studies is
:func:`evaluate_model`; ``hcae eval`` wraps it.
"""

from hcae.evaluation.bootstrap import mean_confidence_interval, spearman_confidence_interval
from hcae.evaluation.encoder import CorpusReusingEncoder, load_model, resolve_model_source
from hcae.evaluation.runner import (
    MAIN_SCORE_NAMES,
    SPLITS,
    TASK_NAMES,
    evaluate_model,
    format_summary_table,
    run_tasks,
    split_main_scores,
    write_results_json,
)
from hcae.evaluation.tasks import LocalSciFact, LocalSTSBenchmark, build_scifact_task, build_stsb_task

__all__ = [
    "MAIN_SCORE_NAMES",
    "SPLITS",
    "TASK_NAMES",
    "CorpusReusingEncoder",
    "LocalSTSBenchmark",
    "LocalSciFact",
    "build_scifact_task",
    "build_stsb_task",
    "evaluate_model",
    "format_summary_table",
    "load_model",
    "mean_confidence_interval",
    "resolve_model_source",
    "run_tasks",
    "spearman_confidence_interval",
    "split_main_scores",
    "write_results_json",
]
