"""Workers: processes that take queued trials one at a time and run them.

A worker takes the oldest WAITING trial (`hcae.study.storage.claim_waiting_trial`) and skips it
if another trial has finished or taken the same point. Otherwise it runs the variant's trial
function and records the outcome in Optuna and MLflow: COMPLETE with the objective and the
scores, PRUNED, or FAIL with an ``error`` attribute. On SIGINT or SIGTERM it records FAIL with an
``interrupted`` attribute and re-raises. With several workers the study process spawns them and
forwards signals to them.
"""

from __future__ import annotations

import gc
import inspect
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from hcae.interrupts import PARENT_DIED_SIGNAL, StudyInterrupted, interrupt_handlers, signals_deferred
from hcae.study.kinds import resolve_trial_function
from hcae.study.results import is_headline_metric
from hcae.study.runs import STUDY_TAG, STUDY_UID_TAG, TRIAL_NUMBER_TAG, TRIAL_UID_TAG, close_trial_run
from hcae.study.spec import Point, StudySpec, config_signature
from hcae.study.storage import HeartbeatThread, ProcessIdentity, claim_waiting_trial, fail_trial, open_storage, trial_status
from hcae.tracking import TrackingStore

logger = logging.getLogger(__name__)

# seconds a worker gets to mark its trial after the study process forwards a signal to it
WORKER_STOP_TIMEOUT_S = 120
# exit status of a worker process that found no queued trial
NO_TRIAL_LEFT_EXIT = 3
# the log format of spawned workers, as the command line sets it for the main process
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@dataclass(frozen=True)
class WorkerContext:
    """The settings a worker process needs. It is pickled into spawned processes, so it contains no open connections."""

    spec: StudySpec
    storage_url: str
    tracking_uri: str
    study_uid: str
    parent_run_id: str
    output_root: str
    heartbeat_interval: int | None
    workers: int
    log_level: int = logging.INFO


def sampler_and_pruner(spec: StudySpec, trial_number: int = 0) -> tuple[optuna.samplers.BaseSampler, optuna.pruners.BasePruner]:
    """Return the Optuna sampler and pruner for a trial of the study: TPE for a search, none for a grid."""
    if spec.search is None:
        # grid trials suggest nothing, so the sampler is never asked for a value
        return optuna.samplers.RandomSampler(seed=0), optuna.pruners.NopPruner()
    # A seed per trial number keeps samples reproducible across workers and resumes.
    # constant_liar keeps parallel workers from sampling next to a point that another one runs.
    sampler = optuna.samplers.TPESampler(seed=spec.search.sampler_seed + trial_number, constant_liar=True)
    pruner = optuna.pruners.MedianPruner() if spec.search.pruner == "median" else optuna.pruners.NopPruner()
    return sampler, pruner


def _study_id(study: optuna.Study, storage: BaseStorage) -> int:
    return storage.get_study_id_from_name(study.study_name)


def run_worker_processes(context: WorkerContext, count: int) -> list[str]:
    """Keep ``count`` spawned worker processes busy until the queue is empty; return their error messages.

    Each process runs one trial and exits, and a new one takes its slot. A trial therefore starts
    in a fresh interpreter, so memory that a run leaves behind (allocator fragmentation, library
    caches) cannot pile up over a long study. In one long-lived worker it grew by about 1 GB per
    trial. A slot whose process failed outside a trial is not refilled, so a worker that cannot
    start does not respawn forever.
    """
    spawn = multiprocessing.get_context("spawn")
    started = 0

    def start(slot: int) -> multiprocessing.process.BaseProcess:
        nonlocal started
        process = spawn.Process(target=_worker_process_main, args=(context, slot), name=f"hcae-worker-{slot}-{started}")
        started += 1
        process.start()
        return process

    logger.info("starting %d worker processes, one trial each", count)
    slots: dict[int, multiprocessing.process.BaseProcess] = {slot: start(slot) for slot in range(count)}
    errors: list[str] = []
    try:
        while slots:
            multiprocessing.connection.wait([process.sentinel for process in slots.values()])
            for slot, process in list(slots.items()):
                if process.is_alive():
                    continue
                process.join()
                del slots[slot]
                if process.exitcode == 0:
                    slots[slot] = start(slot)
                elif process.exitcode != NO_TRIAL_LEFT_EXIT:
                    errors.append(f"worker {slot} (pid {process.pid}) exited with code {process.exitcode}")
    except StudyInterrupted as interrupt:
        _stop_workers(list(slots.values()), interrupt.signal_number)
        raise
    return errors


def _stop_workers(processes: list[multiprocessing.process.BaseProcess], signal_number: int) -> None:
    """Forward a signal to the live workers, give them time to mark their trials, then kill them."""
    for process in processes:
        if process.is_alive():
            try:
                os.kill(process.pid, signal_number)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + WORKER_STOP_TIMEOUT_S
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            logger.error("worker pid %d did not stop within %d s; killing it", process.pid, WORKER_STOP_TIMEOUT_S)
            process.kill()
            process.join()


def _worker_process_main(context: WorkerContext, index: int) -> None:
    logging.basicConfig(level=context.log_level, format=LOG_FORMAT, datefmt="%H:%M:%S")
    _set_torch_threads(context.workers)
    try:
        with interrupt_handlers(parent_death=True):
            _stop_with_parent()
            ran = run_worker(context, label=f"worker {index}", max_trials=1)
        if ran == 0:
            sys.exit(NO_TRIAL_LEFT_EXIT)
    except StudyInterrupted as interrupt:
        sys.exit(interrupt.exit_code)
    except Exception:
        logger.exception("worker %d stopped on an error", index)
        sys.exit(1)


def _stop_with_parent() -> None:
    """Ask Linux to signal this worker when the study process dies, even by SIGKILL.

    The worker then marks its trial as interrupted instead of running on as an orphan. The
    handlers installed by ``interrupt_handlers(parent_death=True)`` must be in place first. On
    other systems nothing is asked, and a killed study leaves its workers to finish their trials.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(pr_set_pdeathsig, int(PARENT_DIED_SIGNAL), 0, 0, 0) != 0:
        logger.warning("prctl(PR_SET_PDEATHSIG) failed (errno %d); this worker outlives a killed study", ctypes.get_errno())
        return
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:
        # the study process died before the request took effect
        os.kill(os.getpid(), PARENT_DIED_SIGNAL)


def _set_torch_threads(workers: int) -> None:
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, cores // workers))


def run_worker(
    context: WorkerContext,
    *,
    study: optuna.Study | None = None,
    storage: BaseStorage | None = None,
    store: TrackingStore | None = None,
    label: str = "worker",
    max_trials: int | None = None,
) -> int:
    """Run queued trials until none is left or ``max_trials`` have run, and return how many ran."""
    spec = context.spec
    store = store or TrackingStore(context.tracking_uri)
    if storage is None:
        storage = open_storage(context.storage_url, context.heartbeat_interval)
    if study is None:
        sampler, pruner = sampler_and_pruner(spec)
        study = optuna.load_study(study_name=spec.name, storage=storage, sampler=sampler, pruner=pruner)
    identity = ProcessIdentity.current()

    ran = 0
    while max_trials is None or ran < max_trials:
        frozen: FrozenTrial | None = None
        try:
            with signals_deferred():
                frozen = claim_waiting_trial(study, storage, identity)
            if frozen is None:
                logger.info("%s: no queued trial left", label)
                return ran
            duplicate_of = _duplicate_of(study, frozen)
            if duplicate_of is not None:
                with signals_deferred():
                    fail_trial(storage, study, frozen.number, {"duplicate_of": duplicate_of, "error": f"repeats trial {duplicate_of}"})
                logger.warning("trial %d repeats trial %d (queued twice); skipped", frozen.number, duplicate_of)
                continue
            _run_trial(context, study, storage, store, frozen)
            ran += 1
        except KeyboardInterrupt as interrupt:
            if frozen is not None:
                _mark_interrupted(storage, store, study, context, frozen, interrupt)
            raise
    return ran


def _duplicate_of(study: optuna.Study, frozen: FrozenTrial) -> int | None:
    """Return the number of a trial that makes this one a repeat, or None.

    A point is done by its COMPLETE or PRUNED trial, and otherwise belongs to the lowest-numbered
    trial that is waiting or running.
    """
    key = frozen.user_attrs.get("point")
    for other in study.get_trials(deepcopy=False):
        if other.number == frozen.number or other.user_attrs.get("point") != key:
            continue
        status = trial_status(other)
        if status in ("COMPLETE", "PRUNED"):
            return other.number
        if status in ("WAITING", "RUNNING") and other.number < frozen.number:
            return other.number
    return None


def _trial_tags(context: WorkerContext, frozen: FrozenTrial, variant: str, seed: int, kind: str) -> dict[str, str]:
    return {
        STUDY_TAG: context.spec.name,
        STUDY_UID_TAG: context.study_uid,
        TRIAL_NUMBER_TAG: str(frozen.number),
        TRIAL_UID_TAG: frozen.user_attrs["uid"],
        "hcae.variant": variant,
        "hcae.seed": str(seed),
        "hcae.kind": kind,
        "hcae.role": "trial",
    }


def _suggest(trial: optuna.Trial, name: str, distribution: optuna.distributions.BaseDistribution) -> Any:
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return trial.suggest_categorical(name, distribution.choices)
    if isinstance(distribution, optuna.distributions.IntDistribution):
        return trial.suggest_int(name, distribution.low, distribution.high, step=distribution.step, log=distribution.log)
    return trial.suggest_float(name, distribution.low, distribution.high, step=distribution.step, log=distribution.log)


def _run_trial(
    context: WorkerContext,
    study: optuna.Study,
    storage: BaseStorage,
    store: TrackingStore,
    frozen: FrozenTrial,
) -> None:
    spec = context.spec
    attrs = frozen.user_attrs
    variant, seed = attrs["variant"], int(attrs["seed"])
    kind = attrs.get("kind") or spec.variant(variant).kind
    trial_id = storage.get_trial_id_from_study_id_trial_number(_study_id(study, storage), frozen.number)
    if spec.search is not None:
        study.sampler, study.pruner = sampler_and_pruner(spec, frozen.number)
    trial = optuna.Trial(study, trial_id)

    tags = _trial_tags(context, frozen, variant, seed, kind)
    # the name of the MLflow run that this module creates if the trial function created none
    run_name = f"{variant}-s{seed}"
    started = time.monotonic()
    try:
        params = {name: _suggest(trial, name, dist) for name, dist in (spec.search.distributions.items() if spec.search else [])}
        run = spec.run_config(Point(variant, seed, params))
        run_name = run.display_name()
        output_dir = Path(context.output_root) / f"trial-{frozen.number:04d}-{variant}-s{seed}"
        with signals_deferred():
            storage.set_trial_user_attr(trial_id, "config_signature", config_signature(run))
            storage.set_trial_user_attr(trial_id, "output_dir", str(output_dir))
        function = resolve_trial_function(kind)
        sampled = f" {params}" if params else ""
        logger.info("trial %d started: %s seed %d%s (run %s)", frozen.number, variant, seed, sampled, run_name)

        def reporter(value: float, step: int) -> None:
            if value is None or not math.isfinite(value):
                return
            with signals_deferred():
                trial.report(float(value), int(step))
            if trial.should_prune():
                raise optuna.TrialPruned(f"dev score {value:.4f} at step {step} is below the median of earlier trials")

        def record_run_id(run_id: str) -> None:
            try:
                with signals_deferred():
                    storage.set_trial_user_attr(trial_id, "mlflow_run_id", run_id)
            except Exception as error:  # the sweep finds the run by its uid tag instead
                logger.warning("trial %d: recording MLflow run id %s failed: %s", frozen.number, run_id, error)

        keywords: dict[str, Any] = {"parent_run_id": context.parent_run_id, "tags": dict(tags), "reporter": reporter}
        if _accepts_keyword(function, "on_start"):
            keywords["on_start"] = record_run_id
        with HeartbeatThread(storage, trial_id).running():
            metrics = function(run, store, output_dir, **keywords)
    except optuna.TrialPruned as pruned:
        minutes = (time.monotonic() - started) / 60
        with signals_deferred():
            run_id = close_trial_run(store, trial_uid=tags[TRIAL_UID_TAG], status="KILLED", trial_state="PRUNED",
                                     parent_run_id=context.parent_run_id, run_name=run_name, tags=tags)
            # a trial function closes its run FAILED on the TrialPruned exception; pruning is a planned stop
            store.client.set_terminated(run_id, status="KILLED")
            _set_attrs(storage, trial_id, {"mlflow_run_id": run_id, "minutes": minutes, "pruned": str(pruned), "finished_at": time.time()})
            study.tell(trial, state=TrialState.PRUNED)
        logger.info("trial %d pruned after %.1f min: %s", frozen.number, minutes, pruned)
        return
    except KeyboardInterrupt:
        raise
    except Exception as error:
        _record_failure(store, storage, study, context, trial, trial_id, tags, frozen, run_name, error, time.monotonic() - started)
        return

    minutes = (time.monotonic() - started) / 60
    with signals_deferred():
        _record_result(store, storage, study, context, trial, trial_id, tags, frozen, run_name, metrics, minutes)


def _accepts_keyword(function: Any, name: str) -> bool:
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def _set_attrs(storage: BaseStorage, trial_id: int, attrs: dict[str, Any]) -> None:
    for key, value in attrs.items():
        storage.set_trial_user_attr(trial_id, key, value)


def _record_failure(
    store: TrackingStore,
    storage: BaseStorage,
    study: optuna.Study,
    context: WorkerContext,
    trial: optuna.Trial,
    trial_id: int,
    tags: dict[str, str],
    frozen: FrozenTrial,
    run_name: str,
    error: Exception,
    seconds: float,
) -> None:
    message = f"{type(error).__name__}: {error}"
    logger.error("trial %d FAILED after %.1f min: %s", frozen.number, seconds / 60, message, exc_info=error)
    with signals_deferred():
        run_id = close_trial_run(store, trial_uid=tags[TRIAL_UID_TAG], status="FAILED", trial_state="FAIL", error=message,
                                 parent_run_id=context.parent_run_id, run_name=run_name, tags=tags)
        _set_attrs(storage, trial_id, {
            "error": message[:2000],
            "error_type": type(error).__name__,
            "mlflow_run_id": run_id,
            "minutes": seconds / 60,
            "finished_at": time.time(),
        })
        study.tell(trial, state=TrialState.FAIL)


def _record_result(
    store: TrackingStore,
    storage: BaseStorage,
    study: optuna.Study,
    context: WorkerContext,
    trial: optuna.Trial,
    trial_id: int,
    tags: dict[str, str],
    frozen: FrozenTrial,
    run_name: str,
    metrics: dict[str, float],
    minutes: float,
) -> None:
    objective = context.spec.objective.metric
    scores = {key: float(value) for key, value in (metrics or {}).items() if _is_number(value)}
    value = scores.get(objective)
    error = None
    if value is None:
        error = f"the trial function returned no {objective!r}; it returned {sorted(scores)}"
    elif not math.isfinite(value):
        error = f"objective {objective} is {value}"

    finite = {key: score for key, score in scores.items() if math.isfinite(score)}
    if error is not None:
        logger.error("trial %d FAILED after %.1f min: %s", frozen.number, minutes, error)
        run_id = close_trial_run(store, trial_uid=tags[TRIAL_UID_TAG], status="FAILED", trial_state="FAIL", error=error,
                                 parent_run_id=context.parent_run_id, run_name=run_name, tags=tags)
        # a run that the trial function closed as FINISHED is marked FAILED too, as Optuna has it
        store.client.set_terminated(run_id, status="FAILED")
        _set_attrs(storage, trial_id, {"error": error, "error_type": "InvalidObjective", "metrics": finite,
                                       "mlflow_run_id": run_id, "minutes": minutes, "finished_at": time.time()})
        study.tell(trial, state=TrialState.FAIL)
        return

    run_id = close_trial_run(store, trial_uid=tags[TRIAL_UID_TAG], status="FINISHED", trial_state="COMPLETE",
                             parent_run_id=context.parent_run_id, run_name=run_name, tags=tags)
    _set_attrs(storage, trial_id, {"metrics": finite, "mlflow_run_id": run_id, "minutes": minutes, "finished_at": time.time()})
    study.tell(trial, value)
    scores_text = " ".join(f"{key}={score:.4f}" for key, score in sorted(finite.items()) if is_headline_metric(key))
    logger.info("trial %d COMPLETE in %.1f min: %s", frozen.number, minutes, scores_text)


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return not isinstance(value, bool)


def _mark_interrupted(
    storage: BaseStorage,
    store: TrackingStore,
    study: optuna.Study,
    context: WorkerContext,
    frozen: FrozenTrial,
    interrupt: KeyboardInterrupt,
) -> None:
    """Mark a taken trial FAIL with ``interrupted`` and its MLflow run KILLED, unless it finished."""
    _release_interrupted_frames(interrupt)
    reason = interrupt.signal_name if isinstance(interrupt, StudyInterrupted) else "KeyboardInterrupt"
    attrs = frozen.user_attrs
    variant, seed = str(attrs.get("variant")), int(attrs.get("seed", -1))
    tags = _trial_tags(context, frozen, variant, seed, str(attrs.get("kind")))
    try:
        run_id = close_trial_run(store, trial_uid=attrs["uid"], status="KILLED", trial_state="INTERRUPTED",
                                 parent_run_id=context.parent_run_id, run_name=f"{variant}-s{seed}", tags=tags)
    except Exception as error:  # the Optuna mark matters more than the MLflow one; the next sweep closes the run
        logger.error("closing the MLflow run of trial %d failed: %s", frozen.number, error)
        run_id = None
    mark: dict[str, Any] = {"interrupted": reason, "finished_at": time.time()}
    if run_id is not None:
        mark["mlflow_run_id"] = run_id
    if fail_trial(storage, study, frozen.number, mark):
        logger.warning("trial %d interrupted by %s; its point runs again on the next run of this study", frozen.number, reason)


def _release_interrupted_frames(interrupt: BaseException) -> None:
    """Free the objects held by the frames that the signal cut short.

    A database session open in one of them keeps its SQLite transaction and lock until it is
    garbage collected, so the writes that mark the trial would fail with "database is locked".
    Writes through `hcae.tracking` hold signals back, but reads and third-party code can still
    be cut.
    """
    traceback.clear_frames(interrupt.__traceback__)
    gc.collect()


__all__ = ["WorkerContext", "run_worker", "run_worker_processes", "sampler_and_pruner"]
