"""Study results as tables: the comparison printed after a run, and MLflow runs for notebooks."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import optuna
import pandas as pd
from optuna.trial import FrozenTrial

from hcae.study.runs import ROLE_TAG, STUDY_TAG, TRIAL_NUMBER_TAG, TRIAL_STATE_TAG, tag_filter
from hcae.study.spec import StudySpec
from hcae.study.storage import DUPLICATE, FAILED, INTERRUPTED, trial_status
from hcae.tracking import DEFAULT_STORE_DIR, TrackingStore

NOT_RUN = "NOT RUN"
# table status -> key in StudyResult.counts
COUNT_KEYS = {
    "COMPLETE": "complete",
    "PRUNED": "pruned",
    FAILED: "failed",
    INTERRUPTED: "interrupted",
    "RUNNING": "running",
    "WAITING": "waiting",
    NOT_RUN: "not_run",
}
DEFAULT_UI_URL = "http://127.0.0.1:5000"
# confidence-interval bounds stay in the table, the CSV and MLflow, but not in the printed table
INTERVAL_SUFFIXES = ("_ci_low", "_ci_high")


def is_headline_metric(key: str) -> bool:
    """Return whether a metric is a dev or test score to print, as opposed to a bound or a timing."""
    return key.startswith(("dev/", "test/")) and not key.endswith(INTERVAL_SUFFIXES)


@dataclass
class StudyResult:
    """The outcome of `hcae.study.run_study`: one table row per point, counts and links.

    Attributes:
        study: the study name.
        mode: ``grid`` or ``search``.
        objective: the objective metric, and ``direction`` whether higher or lower is better.
        table: one row per point: variant, seed, the decisive trial, its status, dev and test
            scores, minutes and the number of attempts (a search adds its sampled values).
        counts: points per status, and ``points`` in all.
        best: the best complete point (``trial``, ``variant``, ``seed``, ``value``), or None.
        problems: ``(point, message)`` for each failed or interrupted point.
        parent_run_id, experiment_id, tracking_uri: where the MLflow runs are.
        storage: the Optuna storage, password hidden.
        worker_errors: worker processes that exited with an error.
    """

    study: str
    mode: str
    objective: str
    direction: str
    table: pd.DataFrame
    counts: dict[str, int]
    best: dict[str, Any] | None
    problems: list[tuple[str, str, str]] = field(default_factory=list)
    parent_run_id: str = ""
    experiment_id: str = ""
    tracking_uri: str = ""
    storage: str = ""
    worker_errors: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 when every point is COMPLETE or PRUNED, else 1."""
        done = self.counts["complete"] + self.counts["pruned"]
        return 0 if done == self.counts["points"] and not self.worker_errors else 1

    def format_table(self) -> str:
        """Return the comparison table as fixed-width text, without the confidence-interval columns."""
        if self.table.empty:
            return "(no points)"
        printed = self.table[[column for column in self.table.columns if not column.endswith(INTERVAL_SUFFIXES)]].copy()
        for column in printed.columns:
            if column.startswith(("dev/", "test/")):
                printed[column] = printed[column].map(lambda value: "-" if pd.isna(value) else f"{value:.4f}")
        if "minutes" in printed:
            printed["minutes"] = printed["minutes"].map(lambda value: "-" if pd.isna(value) else f"{value:.1f}")
        if "trial" in printed:
            printed["trial"] = printed["trial"].map(lambda value: "-" if pd.isna(value) else str(int(value)))
        return printed.to_string(index=False, na_rep="-")

    def format_summary(self) -> str:
        """Return the table with counts, the best point, the problems and how to open the UI."""
        counts = self.counts
        parts = [f"{counts[key]} {key.replace('_', ' ')}" for key in COUNT_KEYS.values() if counts[key]]
        lines = [
            f"Study {self.study} ({self.mode}, objective {self.objective}, {self.direction}): "
            f"{counts['points']} points: {', '.join(parts) or 'none run'}",
            "",
            self.format_table(),
            "",
        ]
        if any(column.endswith(INTERVAL_SUFFIXES) for column in self.table.columns):
            lines.append("95% confidence intervals: summary.csv of the MLflow parent run, or hcae.study.load_study_runs().")
        if self.best is not None:
            lines.append(
                f"Best by {self.objective}: {self.best['variant']} seed {self.best['seed']} "
                f"(trial {self.best['trial']}): {self.best['value']:.4f}"
            )
        failed = [(point, message) for point, status, message in self.problems if status == FAILED]
        interrupted = [(point, message) for point, status, message in self.problems if status == INTERRUPTED]
        if failed:
            lines.append("Failed points, not retried when the study resumes (add --retry-failed to retry them):")
            lines += [f"  {point}: {message}" for point, message in failed]
        if interrupted:
            lines.append("Interrupted points, run again when the same command runs again:")
            lines += [f"  {point}: {message}" for point, message in interrupted]
        for error in self.worker_errors:
            lines.append(f"Worker error: {error}")
        if counts["running"] or counts["waiting"]:
            lines.append("Some points are running or queued in other processes; run the command again later to see them.")

        lines.append(f"Optuna storage: {self.storage} (study {self.study})")
        if self.parent_run_id:
            ui_command = "hcae ui" if _is_default_store(self.tracking_uri) else f"hcae ui --tracking-uri '{self.tracking_uri}'"
            lines.append(
                f"MLflow: run `{ui_command}` and open {DEFAULT_UI_URL}/#/experiments/{self.experiment_id}/runs/{self.parent_run_id} "
                f"(the study's parent run); `{ui_command} --study {self.study}` prints the link that compares its trials."
            )
        return "\n".join(lines)


def _is_default_store(tracking_uri: str) -> bool:
    default = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(DEFAULT_STORE_DIR).resolve() / 'mlflow.db'}"
    return tracking_uri == default


def build_result(
    study: optuna.Study,
    spec: StudySpec,
    store: TrackingStore,
    parent_run_id: str,
    storage_label: str,
    worker_errors: list[str] | None = None,
) -> StudyResult:
    """Build the comparison table of a study from its Optuna trials."""
    groups: dict[str, list[FrozenTrial]] = {}
    for trial in study.get_trials(deepcopy=False):
        if "point" in trial.user_attrs and trial_status(trial) != DUPLICATE:
            groups.setdefault(trial.user_attrs["point"], []).append(trial)

    rows = []
    problems = []
    if spec.search is None:
        for point in spec.grid_points():
            attempts = groups.get(point.key(), [])
            row, problem = _point_row(point.variant, point.seed, attempts)
            rows.append(row)
            if problem:
                problems.append(problem)
    else:
        for attempts in groups.values():
            latest = attempts[-1].user_attrs
            row, problem = _point_row(latest["variant"], int(latest["seed"]), attempts)
            decisive = _decisive(attempts)
            for name in spec.search.distributions:
                row[name] = decisive.params.get(name) if decisive is not None else None
            rows.append(row)
            if problem:
                problems.append(problem)

    table = _order_columns(pd.DataFrame(rows), spec)
    if spec.search is not None and not table.empty and spec.objective.metric in table:
        table = table.sort_values(spec.objective.metric, ascending=spec.objective.direction == "minimize", na_position="last")
        table = table.reset_index(drop=True)

    counts = {key: 0 for key in COUNT_KEYS.values()}
    for status in table.get("status", []):
        counts[COUNT_KEYS[status]] += 1
    counts["points"] = len(table)

    return StudyResult(
        study=spec.name,
        mode=spec.mode,
        objective=spec.objective.metric,
        direction=spec.objective.direction,
        table=table,
        counts=counts,
        best=_best(table, spec),
        problems=problems,
        parent_run_id=parent_run_id,
        experiment_id=store.experiment_id,
        tracking_uri=store.tracking_uri,
        storage=storage_label,
        worker_errors=list(worker_errors or []),
    )


def _decisive(attempts: list[FrozenTrial]) -> FrozenTrial | None:
    """Return the trial that decides a point: its COMPLETE or PRUNED one, else its latest."""
    if not attempts:
        return None
    finished = [trial for trial in attempts if trial_status(trial) in ("COMPLETE", "PRUNED")]
    return finished[-1] if finished else attempts[-1]


def _point_row(variant: str, seed: int, attempts: list[FrozenTrial]) -> tuple[dict[str, Any], tuple[str, str, str] | None]:
    decisive = _decisive(attempts)
    row: dict[str, Any] = {"variant": variant, "seed": seed}
    if decisive is None:
        row.update({"trial": None, "status": NOT_RUN, "minutes": None, "attempts": 0})
        return row, None

    status = trial_status(decisive)
    attrs = decisive.user_attrs
    row.update({"trial": decisive.number, "status": status, "minutes": attrs.get("minutes"), "attempts": len(attempts)})
    for key, value in (attrs.get("metrics") or {}).items():
        if key.startswith(("dev/", "test/")):
            row[key] = value

    problem = None
    if status in (FAILED, INTERRUPTED):
        message = attrs.get("error") if status == FAILED else f"interrupted ({attrs.get('interrupted', 'its process ended')})"
        problem = (f"{variant} seed {seed} (trial {decisive.number})", status, str(message))
    return row, problem


def _order_columns(table: pd.DataFrame, spec: StudySpec) -> pd.DataFrame:
    if table.empty:
        return table
    metrics = [column for column in table.columns if column.startswith(("dev/", "test/"))]
    objective = [spec.objective.metric] if spec.objective.metric in metrics else []
    dev = sorted(column for column in metrics if column.startswith("dev/") and column not in objective)
    test = sorted(column for column in metrics if column.startswith("test/"))
    params = list(spec.search.distributions) if spec.search is not None else []
    leading = ["variant", "seed", "trial", "status"]
    trailing = ["minutes", "attempts"]
    return table[leading + params + objective + dev + test + trailing]


def _best(table: pd.DataFrame, spec: StudySpec) -> dict[str, Any] | None:
    metric = spec.objective.metric
    if table.empty or metric not in table:
        return None
    complete = table[(table["status"] == "COMPLETE") & table[metric].notna()]
    if complete.empty:
        return None
    index = complete[metric].idxmax() if spec.objective.direction == "maximize" else complete[metric].idxmin()
    row = complete.loc[index]
    return {"trial": int(row["trial"]), "variant": row["variant"], "seed": int(row["seed"]), "value": float(row[metric])}


# ---- MLflow runs, for notebooks and reports ----


def load_study_runs(study_name: str, tracking_uri: str | None = None, include_parent: bool = False) -> pd.DataFrame:
    """Return a study's MLflow runs as a DataFrame, one row per trial attempt, by trial number.

    Columns: ``run_id``, ``run_name``, ``status`` (MLflow's), ``trial_state`` (Optuna's outcome:
    COMPLETE, PRUNED, FAIL or INTERRUPTED), ``trial_number``, ``variant``, ``seed``,
    ``start_time``, ``end_time``, ``minutes``, ``parent_run_id``, then ``metrics.<key>`` (the
    last value of each metric), ``params.<key>`` and ``tags.<key>``, as `mlflow.search_runs`
    names them. A retried point has one row per attempt; filter on ``trial_state``.

    Args:
        study_name: the study name (the ``hcae.study`` tag).
        tracking_uri: MLflow tracking URI; default ``MLFLOW_TRACKING_URI`` or ``mlruns/mlflow.db``.
        include_parent: also return the study's parent run (``trial_number`` is missing there).
    """
    store = TrackingStore(tracking_uri)
    runs = store.find_runs(tag_filter(STUDY_TAG, study_name))
    rows = []
    for run in runs:
        tags = run.data.tags
        if tags.get(ROLE_TAG) == "study" and not include_parent:
            continue
        start = pd.to_datetime(run.info.start_time, unit="ms", utc=True) if run.info.start_time else pd.NaT
        end = pd.to_datetime(run.info.end_time, unit="ms", utc=True) if run.info.end_time else pd.NaT
        row: dict[str, Any] = {
            "run_id": run.info.run_id,
            "run_name": run.info.run_name,
            "status": run.info.status,
            "trial_state": tags.get(TRIAL_STATE_TAG),
            "trial_number": int(tags[TRIAL_NUMBER_TAG]) if TRIAL_NUMBER_TAG in tags else None,
            "variant": tags.get("hcae.variant"),
            "seed": int(tags["hcae.seed"]) if tags.get("hcae.seed", "").lstrip("-").isdigit() else None,
            "start_time": start,
            "end_time": end,
            "minutes": (end - start).total_seconds() / 60 if not (pd.isna(start) or pd.isna(end)) else math.nan,
            "parent_run_id": tags.get("mlflow.parentRunId"),
        }
        row.update({f"metrics.{key}": value for key, value in run.data.metrics.items()})
        row.update({f"params.{key}": value for key, value in run.data.params.items()})
        row.update({f"tags.{key}": value for key, value in tags.items()})
        rows.append(row)

    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["trial_number"] = table["trial_number"].astype("Int64")
    table["seed"] = table["seed"].astype("Int64")
    return table.sort_values(["trial_number", "start_time"], na_position="first").reset_index(drop=True)


def compare_runs_url(base_url: str, experiment_id: str, run_ids: list[str]) -> str:
    """Return the link to MLflow's compare-runs page for these runs (MLflow 3 UI routes)."""
    runs = quote(json.dumps(run_ids, separators=(",", ":")))
    experiments = quote(json.dumps([experiment_id], separators=(",", ":")))
    return f"{base_url.rstrip('/')}/#/compare-runs?runs={runs}&experiments={experiments}"


def study_compare_url(study_name: str, tracking_uri: str | None = None, base_url: str = DEFAULT_UI_URL) -> tuple[str, pd.DataFrame]:
    """Return the compare-runs link for a study's trials and the runs it shows.

    The page shows each point's COMPLETE run, or every trial run if none is complete.

    Raises:
        LookupError: if the store has no trial runs of the study.
    """
    store = TrackingStore(tracking_uri)
    runs = load_study_runs(study_name, store.tracking_uri)
    if runs.empty:
        raise LookupError(f"no MLflow runs of study {study_name!r} in {store.tracking_uri}")
    complete = runs[runs["trial_state"] == "COMPLETE"]
    compared = complete if not complete.empty else runs
    return compare_runs_url(base_url, store.experiment_id, list(compared["run_id"])), compared
