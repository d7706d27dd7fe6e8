"""The MLflow tracking interface on a real SQLite store: nesting, tags, batching and closing runs."""

from __future__ import annotations

import shutil

import mlflow
import optuna
import pytest

from hcae.tracking import MAX_PARAM_LENGTH, TrackingStore, environment_tags


@pytest.fixture(scope="module")
def template_db(tmp_path_factory):
    """An MLflow database with its tables created once; creating them takes about 7 s."""
    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    TrackingStore(f"sqlite:///{path}", experiment="template")
    return path


@pytest.fixture
def store(tmp_path, template_db) -> TrackingStore:
    store_dir = tmp_path / "mlruns"
    store_dir.mkdir()
    shutil.copy(template_db, store_dir / "mlflow.db")
    return TrackingStore(f"sqlite:///{store_dir / 'mlflow.db'}")


def test_experiment_artifacts_beside_database(store, tmp_path):
    experiment = store.client.get_experiment(store.experiment_id)
    assert experiment.name == "hcae"
    assert experiment.artifact_location == (tmp_path / "mlruns" / "artifacts").as_uri()


def test_second_store_reuses_experiment(store):
    again = TrackingStore(store.tracking_uri)
    assert again.experiment_id == store.experiment_id


def test_start_run_nests_under_parent(store):
    parent = store.start_run("parent")
    child = store.start_run("child", tags={"hcae.variant": "v1.1"}, parent_run_id=parent.run_id)
    run = store.client.get_run(child.run_id)
    assert run.data.tags["mlflow.parentRunId"] == parent.run_id
    assert run.data.tags["hcae.variant"] == "v1.1"
    assert run.info.run_name == "child"
    assert run.info.status == "RUNNING"


def test_start_run_nests_under_active_run(store):
    mlflow.set_tracking_uri(store.tracking_uri)
    try:
        with mlflow.start_run(experiment_id=store.experiment_id) as outer:
            nested = store.start_run("inside a user's run")
            explicit = store.start_run("explicit parent", parent_run_id=nested.run_id)
    finally:
        mlflow.set_tracking_uri(None)

    assert store.client.get_run(nested.run_id).data.tags["mlflow.parentRunId"] == outer.info.run_id
    assert store.client.get_run(explicit.run_id).data.tags["mlflow.parentRunId"] == nested.run_id
    assert store.client.get_run(outer.info.run_id).info.status == "FINISHED"


def test_run_without_active_run_is_top_level(store):
    assert mlflow.active_run() is None
    tracker = store.start_run("alone")
    assert "mlflow.parentRunId" not in store.client.get_run(tracker.run_id).data.tags


@pytest.mark.parametrize("status", ["FINISHED", "FAILED", "KILLED"])
def test_finish_sets_status(store, status):
    tracker = store.start_run("closing")
    tracker.finish(status)
    run = store.client.get_run(tracker.run_id)
    assert run.info.status == status
    assert run.info.end_time is not None


def test_log_params_batches_and_truncates(store):
    tracker = store.start_run("params")
    params = {f"p{index:03d}": index for index in range(250)}
    params["long"] = "x" * (MAX_PARAM_LENGTH + 10)
    params["nested"] = {"a": [1, 2]}
    tracker.log_params(params)
    logged = store.client.get_run(tracker.run_id).data.params
    assert len(logged) == 252
    assert logged["p249"] == "249"
    assert len(logged["long"]) == MAX_PARAM_LENGTH
    assert logged["long"].endswith("...")
    assert logged["nested"] == '{"a": [1, 2]}'


def test_log_metrics_skips_non_finite(store):
    tracker = store.start_run("metrics")
    tracker.log_metrics({"dev/mean": 0.5, "dev/nan": float("nan"), "dev/inf": float("inf")}, step=3)
    metrics = store.client.get_run(tracker.run_id).data.metrics
    assert metrics == {"dev/mean": 0.5}
    history = store.client.get_metric_history(tracker.run_id, "dev/mean")
    assert [point.step for point in history] == [3]


def test_find_runs_by_dotted_tag(store):
    first = store.start_run("a", tags={"hcae.study": "s1"})
    store.start_run("b", tags={"hcae.study": "s2"})
    found = store.find_runs("tags.`hcae.study` = 's1'")
    assert [run.info.run_id for run in found] == [first.run_id]


def test_log_dict_writes_artifact(store):
    tracker = store.start_run("artifact")
    tracker.log_dict({"seed": 0}, "run.json")
    paths = [item.path for item in store.client.list_artifacts(tracker.run_id)]
    assert paths == ["run.json"]


def test_environment_tags_keys():
    tags = environment_tags()
    for key in ("hcae.git_commit", "hcae.git_dirty", "hcae.python", "hcae.cpu", "hcae.gpu", "hcae.version.torch", "hcae.version.mlflow"):
        assert key in tags, key
    assert tags["hcae.git_dirty"] in ("true", "false")
    assert tags["hcae.version.optuna"] == optuna.__version__
