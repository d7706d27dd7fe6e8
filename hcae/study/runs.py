"""The MLflow side of a study: one parent run per study and one nested run per trial.

The trial function creates each trial's run, and this module finds it again by its
``hcae.trial_uid`` tag. It closes runs that a killed process left RUNNING. For a trial that failed
before its function could create a run, it creates a closed one, so every trial has a run.
"""

from __future__ import annotations

import logging
from typing import Any

from hcae.study.spec import StudySpec
from hcae.tracking import TrackingStore, environment_tags

logger = logging.getLogger(__name__)

ROLE_TAG = "hcae.role"
STUDY_TAG = "hcae.study"
STUDY_UID_TAG = "hcae.study_uid"
TRIAL_UID_TAG = "hcae.trial_uid"
TRIAL_NUMBER_TAG = "hcae.trial_number"
TRIAL_STATE_TAG = "hcae.trial_state"
ERROR_TAG = "hcae.error"
# MLflow shows this tag as the run's description
DESCRIPTION_TAG = "mlflow.note.content"


def tag_filter(tag: str, value: str) -> str:
    """Return an MLflow filter string that matches runs whose tag equals ``value``."""
    if "'" in value:
        raise ValueError(f"tag value {value!r} contains a single quote, which MLflow filter strings cannot match")
    return f"tags.`{tag}` = '{value}'"


def find_trial_run(store: TrackingStore, trial_uid: str) -> Any | None:
    """Return the MLflow run of a trial attempt, or None if the trial function created none."""
    runs = store.find_runs(tag_filter(TRIAL_UID_TAG, trial_uid))
    return runs[0] if runs else None


def open_parent_run(store: TrackingStore, spec: StudySpec, study_uid: str, known_run_id: str | None, tags: dict[str, str]) -> str:
    """Find the study's parent run again, or create it; mark it RUNNING and return its id.

    The run is looked up by ``known_run_id`` (stored with the Optuna study), then by the study's
    uid tag. A new run nests under an MLflow run that the caller already started, if any.
    """
    run_id = _existing_parent(store, study_uid, known_run_id)
    all_tags = {
        **environment_tags(),
        ROLE_TAG: "study",
        STUDY_TAG: spec.name,
        STUDY_UID_TAG: study_uid,
        DESCRIPTION_TAG: spec.description or f"hcae study {spec.name} from {spec.source}",
        **tags,
    }
    if run_id is None:
        tracker = store.start_run(spec.name, tags=all_tags)
        run_id = tracker.run_id
        params = {
            "study": spec.name,
            "mode": spec.mode,
            "profile": spec.profile,
            "objective_metric": spec.objective.metric,
            "objective_direction": spec.objective.direction,
        }
        tracker.log_params(params)
        logger.info("created MLflow parent run %s for study %s", run_id, spec.name)
    else:
        store.client.update_run(run_id, status="RUNNING")
        store.client.log_batch(run_id, tags=_run_tags(all_tags))
        logger.info("resuming MLflow parent run %s of study %s", run_id, spec.name)
    if spec.text:
        store.client.log_text(run_id, spec.text, "study.yaml")
    return run_id


def _existing_parent(store: TrackingStore, study_uid: str, known_run_id: str | None) -> str | None:
    from mlflow.exceptions import MlflowException

    if known_run_id:
        try:
            run = store.client.get_run(known_run_id)
        except MlflowException:
            run = None
        if run is not None and run.info.lifecycle_stage == "active":
            return known_run_id
        logger.warning("MLflow parent run %s of the study is gone; looking it up by tag", known_run_id)
    runs = store.find_runs(f"{tag_filter(STUDY_UID_TAG, study_uid)} and {tag_filter(ROLE_TAG, 'study')}")
    return runs[0].info.run_id if runs else None


def _run_tags(tags: dict[str, Any]) -> list[Any]:
    from mlflow.entities import RunTag

    return [RunTag(key, str(value)) for key, value in tags.items()]


def close_trial_run(
    store: TrackingStore,
    *,
    trial_uid: str,
    status: str,
    trial_state: str,
    parent_run_id: str,
    run_name: str,
    tags: dict[str, str],
    error: str | None = None,
) -> str:
    """Make sure a trial attempt has a closed MLflow run and tag it with its Optuna outcome.

    A run that the trial function left RUNNING is closed with ``status``. When the function
    created no run (it failed or was stopped first), a run is created and closed here. Returns
    the run id.
    """
    run = find_trial_run(store, trial_uid)
    extra_tags = {TRIAL_STATE_TAG: trial_state}
    if error is not None:
        extra_tags[ERROR_TAG] = error[:5000]
    if run is None:
        tracker = store.start_run(run_name, tags={**tags, **extra_tags}, parent_run_id=parent_run_id)
        tracker.finish(status)
        return tracker.run_id

    run_id = run.info.run_id
    if error is not None and ERROR_TAG in run.data.tags:
        # the trial function's own error message is kept
        del extra_tags[ERROR_TAG]
    store.client.log_batch(run_id, tags=_run_tags(extra_tags))
    if run.info.status == "RUNNING":
        store.client.set_terminated(run_id, status=status)
    return run_id


def kill_orphaned_runs(store: TrackingStore, study_uid: str, finished_trial_uids: set[str]) -> list[str]:
    """Close as KILLED every RUNNING trial run of the study whose Optuna trial has finished.

    Such a run belongs to a process that was killed or lost its heartbeat. Returns their ids.
    """
    running = store.find_runs(f"{tag_filter(STUDY_UID_TAG, study_uid)} and attributes.status = 'RUNNING'")
    killed = []
    for run in running:
        if run.data.tags.get(ROLE_TAG) == "study":
            continue
        if run.data.tags.get(TRIAL_UID_TAG) not in finished_trial_uids:
            continue
        store.client.log_batch(run.info.run_id, tags=_run_tags({TRIAL_STATE_TAG: "INTERRUPTED"}))
        store.client.set_terminated(run.info.run_id, status="KILLED")
        killed.append(run.info.run_id)
        logger.warning("closed MLflow run %s as KILLED: its process ended without closing it", run.info.run_id)
    return killed


def finish_parent_run(
    store: TrackingStore,
    run_id: str,
    *,
    status: str,
    summary_text: str,
    summary_csv: str,
    metrics: dict[str, float],
    tags: dict[str, str],
) -> None:
    """Log the study's summary table, counts and best score to the parent run and close it with ``status``."""
    store.client.log_text(run_id, summary_text, "summary.txt")
    store.client.log_text(run_id, summary_csv, "summary.csv")
    tracker_tags = _run_tags(tags)
    if tracker_tags:
        store.client.log_batch(run_id, tags=tracker_tags)
    if metrics:
        from hcae.tracking import MlflowTracker

        MlflowTracker(store.client, run_id).log_metrics(metrics)
    # RUNNING leaves the run open for the workers of other processes that are still at it
    if status != "RUNNING":
        store.client.set_terminated(run_id, status=status)
