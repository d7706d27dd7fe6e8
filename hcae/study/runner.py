"""Run or resume a study: queue the missing points, run them in one or more workers, summarise.

How a run proceeds, and why it can be repeated at will:

1. The Optuna study is created or loaded by name, and its settings (mode, objective) are checked
   against the study file.
2. Trials left RUNNING by a process that has ended are marked FAIL with an ``interrupted``
   attribute and their MLflow runs KILLED. On this host the recorded pid shows a dead process;
   for trials of other hosts, an RDB storage's heartbeats show it.
3. Each grid point (variant x seed) that has no COMPLETE or PRUNED trial, no queued or running one,
   and whose latest attempt did not fail on its own (unless ``retry_failed``) is queued once, in
   this process, as a WAITING trial. A search tops its queue up to ``trials`` points the same way,
   and queues interrupted points again with their sampled values.
4. Workers take WAITING trials one at a time (`hcae.study.storage.claim_waiting_trial`) until
   none is left. A taken trial that repeats a point already done or taken earlier (two study
   processes queued it at once) is marked DUPLICATE and skipped.
5. The comparison table is logged to the MLflow parent run, which is closed.
"""

from __future__ import annotations

import logging
import socket
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from hcae.errors import RunConfigError
from hcae.interrupts import StudyInterrupted, interrupt_handlers, signals_deferred
from hcae.study.kinds import resolve_trial_function
from hcae.study.results import StudyResult, build_result
from hcae.study.runs import ERROR_TAG, find_trial_run, finish_parent_run, kill_orphaned_runs, open_parent_run
from hcae.study.spec import SEARCH_VARIANT, Point, StudySpec, config_signature
from hcae.study.storage import (
    DUPLICATE,
    FAILED,
    INTERRUPTED,
    default_storage_url,
    fail_trial,
    heartbeat_enabled,
    hide_password,
    is_journal,
    open_storage,
    running_trial_is_stale,
    trial_status,
)
from hcae.study.worker import WorkerContext, run_worker, run_worker_processes, sampler_and_pruner
from hcae.tracking import TrackingStore

logger = logging.getLogger(__name__)

# seconds between heartbeats of a running trial on an RDB storage; stale after four missed beats
DEFAULT_HEARTBEAT_INTERVAL_S = 60


@dataclass(frozen=True)
class StudyOptions:
    """How to run a study.

    A single queued trial runs in this process, without a worker process, and so does every trial
    with ``in_process``.

    Attributes:
        storage: Optuna storage: an RDB URL or a journal file; default ``sqlite:///mlruns/optuna.db``.
        tracking_uri: MLflow tracking URI; default that of `hcae.tracking.TrackingStore`.
        workers: worker processes that run trials at the same time. Each sets torch to
            ``cores // workers`` threads and runs one trial in a fresh process.
        retry_failed: queue again the points whose latest trial failed on its own.
        output_dir: folder for the trials' models and results; default ``runs/studies/<study>``.
        heartbeat_interval: seconds between heartbeats on RDB storages, 0 or None for none.
        in_process: run the trials one after another in this process, where a debugger's
            breakpoints in a trial function stop. Memory that one trial leaves behind stays for
            the next, so long studies are better run in worker processes.
    """

    storage: str | None = None
    tracking_uri: str | None = None
    workers: int = 1
    retry_failed: bool = False
    output_dir: Path | None = None
    heartbeat_interval: int | None = DEFAULT_HEARTBEAT_INTERVAL_S
    in_process: bool = False


def run_study(spec: StudySpec, options: StudyOptions | None = None) -> StudyResult:
    """Run or resume a study and return its comparison table.

    Raises:
        RunConfigError: if the stored study disagrees with the file (mode, objective, or the
            config of a finished point).
        StudyInterrupted: after SIGINT or SIGTERM, once the running trials are marked as
            interrupted. Its ``result`` is the `StudyResult` of the stopped run.
    """
    options = options or StudyOptions()
    if options.workers < 1:
        raise RunConfigError(f"workers={options.workers} is invalid: use 1 or more")
    if options.in_process and options.workers > 1:
        raise RunConfigError(f"workers={options.workers} with in_process is invalid because in-process trials run one "
                             "at a time: use 1 worker, or drop --in-process to run worker processes")
    # an unknown or broken trial function fails here, before any trial starts
    for kind in sorted(spec.kinds()):
        resolve_trial_function(kind)
    storage_url = options.storage or default_storage_url()
    heartbeat_interval = None if is_journal(storage_url) else (options.heartbeat_interval or None)

    store = TrackingStore(options.tracking_uri)
    storage = open_storage(storage_url, heartbeat_interval)
    study = _open_optuna_study(spec, storage)
    study_uid = study.user_attrs["uid"]
    check_finished_points(study, spec)
    output_root = Path(options.output_dir or Path("runs") / "studies" / spec.name).resolve()
    storage_label = hide_password(storage_url)

    interrupt: StudyInterrupted | None = None
    worker_errors: list[str] = []
    parent_run_id = ""
    with interrupt_handlers():
        try:
            with signals_deferred():
                parent_run_id = open_parent_run(
                    store,
                    spec,
                    study_uid,
                    study.user_attrs.get("mlflow_parent_run_id"),
                    tags={"hcae.optuna_storage": storage_label, "hcae.workers": str(options.workers)},
                )
                study.set_user_attr("mlflow_parent_run_id", parent_run_id)
            sweep_interrupted_trials(study, storage, store, study_uid)
            queued = plan_study(study, storage, spec, retry_failed=options.retry_failed)
            context = WorkerContext(
                spec=spec,
                storage_url=storage_url,
                tracking_uri=store.tracking_uri,
                study_uid=study_uid,
                parent_run_id=parent_run_id,
                output_root=str(output_root),
                heartbeat_interval=heartbeat_interval,
                workers=options.workers,
                log_level=logging.getLogger().getEffectiveLevel(),
            )
            if queued == 1 or (queued and options.in_process):
                run_worker(context, study=study, storage=storage, store=store)
            elif queued:
                worker_errors = run_worker_processes(context, min(options.workers, queued))
        except StudyInterrupted as error:
            interrupt = error
            logger.warning("study %s: stopping on %s", spec.name, error.signal_name)
        except Exception as error:
            _close_parent_after_error(store, parent_run_id, error)
            raise

        try:
            with signals_deferred():
                result = _finish(study, storage, store, spec, study_uid, parent_run_id, storage_label, interrupt, worker_errors)
        except StudyInterrupted as error:
            # a signal that arrived during the clean-up, which has completed
            interrupt = interrupt or error
            result = build_result(study, spec, store, parent_run_id, storage_label, worker_errors)

    if interrupt is not None:
        interrupt.result = result
        raise interrupt
    return result


def _close_parent_after_error(store: TrackingStore, parent_run_id: str, error: Exception) -> None:
    if not parent_run_id:
        return
    try:
        store.client.set_tag(parent_run_id, ERROR_TAG, f"{type(error).__name__}: {error}"[:5000])
        store.client.set_terminated(parent_run_id, status="FAILED")
    except Exception as close_error:  # the original error is the one to report
        logger.error("closing MLflow parent run %s after an error failed: %s", parent_run_id, close_error)


def _finish(
    study: optuna.Study,
    storage: BaseStorage,
    store: TrackingStore,
    spec: StudySpec,
    study_uid: str,
    parent_run_id: str,
    storage_label: str,
    interrupt: StudyInterrupted | None,
    worker_errors: list[str],
) -> StudyResult:
    sweep_interrupted_trials(study, storage, store, study_uid)
    result = build_result(study, spec, store, parent_run_id, storage_label, worker_errors)
    if interrupt is not None:
        status = "KILLED"
    elif result.counts["running"] or result.counts["waiting"]:
        # workers of another process or host are still running trials, so the parent run stays open
        status = "RUNNING"
    elif result.counts["complete"] + result.counts["pruned"] == result.counts["points"]:
        status = "FINISHED"
    else:
        status = "FAILED"
    if parent_run_id:
        metrics = {f"points_{key}": float(value) for key, value in result.counts.items()}
        if result.best is not None:
            metrics[f"best/{spec.objective.metric}"] = result.best["value"]
        finish_parent_run(
            store,
            parent_run_id,
            status=status,
            summary_text=result.format_table(),
            summary_csv=result.table.to_csv(index=False),
            metrics=metrics,
            tags={"hcae.study_status": status},
        )
    return result


# ---- the Optuna study ----


def _open_optuna_study(spec: StudySpec, storage: BaseStorage) -> optuna.Study:
    sampler, pruner = sampler_and_pruner(spec)
    study = optuna.create_study(
        study_name=spec.name,
        storage=storage,
        direction=spec.objective.direction,
        load_if_exists=True,
        sampler=sampler,
        pruner=pruner,
    )
    stored_direction = study.direction.name.lower()
    if stored_direction != spec.objective.direction:
        raise RunConfigError(
            f"{spec.source}: study {spec.name!r} exists with direction {stored_direction} but the study file sets "
            f"{spec.objective.direction}; pass --study-name to start a new study"
        )

    attrs = study.user_attrs
    expected = {"mode": spec.mode, "objective_metric": spec.objective.metric}
    if spec.search is not None:
        expected["base_signature"] = spec.base_signature()
    if "uid" not in attrs:
        for key, value in {**expected, "uid": uuid.uuid4().hex}.items():
            study.set_user_attr(key, value)
        return study
    for key, value in expected.items():
        if attrs.get(key) != value:
            setting = "base config, seed, kind, objective or search space" if key == "base_signature" else key
            raise RunConfigError(
                f"{spec.source}: study {spec.name!r} exists with a different {setting} "
                f"({attrs.get(key)!r}, the file gives {value!r}), so its trials are not comparable with new ones; "
                f"pass --study-name to start a new study, or restore the file"
            )
    return study


# ---- planning: which points to queue ----


def plan_study(study: optuna.Study, storage: BaseStorage, spec: StudySpec, retry_failed: bool = False) -> int:
    """Queue every point that still needs a trial, once; return how many are waiting now.

    Raises:
        RunConfigError: if a finished grid point was run with a config that differs from the
            one the file gives now.
    """
    with signals_deferred():
        if spec.search is None:
            _plan_grid(study, storage, spec, retry_failed)
        else:
            _plan_search(study, spec, retry_failed)
    waiting = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    logger.info("study %s: %d trial(s) queued", spec.name, waiting)
    return waiting


def check_finished_points(study: optuna.Study, spec: StudySpec) -> None:
    """Check that every finished grid point was run with the config the file gives now.

    Raises:
        RunConfigError: naming the first point whose config changed since it finished.
    """
    if spec.search is not None:
        # a search compares its base signature when the study is opened
        return
    groups = _attempts_by_point(study)
    for point in spec.grid_points():
        finished = [trial for trial in groups.get(point.key(), []) if trial_status(trial) in ("COMPLETE", "PRUNED")]
        if not finished:
            continue
        if finished[-1].user_attrs.get("config_signature") != config_signature(spec.run_config(point)):
            raise RunConfigError(
                f"{spec.source}: variant {point.variant!r} seed {point.seed} finished in trial {finished[-1].number} "
                f"with a different run config than the file gives now (the base, the variant, the profile or an "
                f"hcae default changed); pass --study-name to run the changed study as a new one, or restore the file"
            )


def _attempts_by_point(study: optuna.Study) -> dict[str, list[FrozenTrial]]:
    groups: dict[str, list[FrozenTrial]] = {}
    for trial in study.get_trials(deepcopy=False):
        if "point" in trial.user_attrs and trial_status(trial) != DUPLICATE:
            groups.setdefault(trial.user_attrs["point"], []).append(trial)
    return groups


def _plan_grid(study: optuna.Study, storage: BaseStorage, spec: StudySpec, retry_failed: bool) -> None:
    groups = _attempts_by_point(study)
    expected_keys = {point.key() for point in spec.grid_points()}

    # queued trials of points that left the file would run a variant that no longer exists
    for key, attempts in groups.items():
        if key in expected_keys:
            continue
        for trial in attempts:
            if trial.state == TrialState.WAITING:
                fail_trial(storage, study, trial.number, {"error": "the point is no longer in the study file", "error_type": "RemovedPoint"})

    check_finished_points(study, spec)
    for point in spec.grid_points():
        attempts = groups.get(point.key(), [])
        signature = config_signature(spec.run_config(point))
        statuses = [trial_status(trial) for trial in attempts]
        if any(status in ("COMPLETE", "PRUNED") for status in statuses):
            continue
        if any(status in ("WAITING", "RUNNING") for status in statuses):
            continue
        if statuses and statuses[-1] == FAILED and not retry_failed:
            continue
        _enqueue(study, spec, point, {"config_signature": signature}, retry_of=attempts[-1].number if attempts else None)


def _plan_search(study: optuna.Study, spec: StudySpec, retry_failed: bool) -> None:
    assert spec.search is not None
    groups = _attempts_by_point(study)
    for key, attempts in groups.items():
        latest = attempts[-1]
        status = trial_status(latest)
        if status == INTERRUPTED or (status == FAILED and retry_failed):
            point = Point(SEARCH_VARIANT, spec.search.seed, dict(latest.params))
            _enqueue(study, spec, point, {}, retry_of=latest.number, point_key=key)

    for _ in range(spec.search.trials - len(groups)):
        point_key = f"search:{uuid.uuid4().hex}"
        _enqueue(study, spec, Point(SEARCH_VARIANT, spec.search.seed), {}, point_key=point_key)


def _enqueue(
    study: optuna.Study,
    spec: StudySpec,
    point: Point,
    extra_attrs: dict[str, Any],
    retry_of: int | None = None,
    point_key: str | None = None,
) -> None:
    attrs = {
        "point": point_key or point.key(),
        "variant": point.variant,
        "seed": point.seed,
        "kind": spec.variant(point.variant).kind,
        "uid": uuid.uuid4().hex,
        **extra_attrs,
    }
    if retry_of is not None:
        attrs["retry_of"] = retry_of
    study.enqueue_trial(point.params, user_attrs=attrs)
    origin = f"retry of trial {retry_of}" if retry_of is not None else "new"
    logger.debug("queued %s point %s", origin, attrs["point"])


# ---- stale trials ----


def sweep_interrupted_trials(study: optuna.Study, storage: BaseStorage, store: TrackingStore, study_uid: str) -> list[int]:
    """Mark RUNNING trials of ended processes as interrupted and close their MLflow runs.

    Returns the numbers of the trials marked here.
    """
    if heartbeat_enabled(storage):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)

    host = socket.gethostname()
    marked = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = trial.user_attrs
        if running_trial_is_stale(trial, host):
            reason = f"process {attrs['pid']} on {host} ended without finishing the trial"
            mark = {"interrupted": reason, "finished_at": time.time()}
            run = find_trial_run(store, attrs["uid"]) if "uid" in attrs else None
            if run is not None:
                mark["mlflow_run_id"] = run.info.run_id
            if fail_trial(storage, study, trial.number, mark):
                marked.append(trial.number)
                logger.warning("trial %d: %s; marked as interrupted, its point will run again", trial.number, reason)
        elif attrs.get("host") not in (None, host) and not heartbeat_enabled(storage):
            logger.warning(
                "trial %d is RUNNING on host %s (pid %s); without heartbeats this process cannot tell whether it "
                "is still alive, so it is left as it is",
                trial.number, attrs.get("host"), attrs.get("pid"),
            )

    finished_uids = {
        trial.user_attrs["uid"]
        for trial in study.get_trials(deepcopy=False)
        if trial.state.is_finished() and "uid" in trial.user_attrs
    }
    kill_orphaned_runs(store, study_uid, finished_uids)
    return marked


__all__ = ["StudyOptions", "check_finished_points", "plan_study", "run_study", "sweep_interrupted_trials"]
