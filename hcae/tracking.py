"""The MLflow side of a run, behind one small interface.

The default store is SQLite in ``mlruns/mlflow.db`` with artifacts under ``mlruns/artifacts``;
``--tracking-uri`` or ``MLFLOW_TRACKING_URI`` selects another store or a server. All writes go
through `MlflowClient` with explicit run ids, so several worker processes can log to one store and
a study's trials nest under its parent run without relying on MLflow's global active run.

Each database write holds SIGINT and SIGTERM back until it ends (`hcae.interrupts.signals_deferred`):
a write cut in half by a stopping study leaves its SQLite transaction open, and the clean-up that
follows then finds the database locked.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import subprocess
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

from hcae.interrupts import signals_deferred

logger = logging.getLogger(__name__)

DEFAULT_STORE_DIR = Path("mlruns")
EXPERIMENT_NAME = "hcae"
# MLflow rejects a parameter value longer than this many characters
MAX_PARAM_LENGTH = 6000

# package versions recorded with every run
TRACKED_PACKAGES = (
    "hcae", "torch", "transformers", "sentence-transformers", "mteb", "tokenizers",
    "safetensors", "optuna", "mlflow", "numpy", "datasets",
)


class Tracker(Protocol):
    """The destination of a run's parameters, metrics, tags and files."""

    run_id: str | None

    def log_params(self, params: dict[str, Any]) -> None: ...

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...

    def set_tags(self, tags: dict[str, Any]) -> None: ...

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...

    def log_dict(self, values: dict[str, Any], artifact_file: str) -> None: ...


class NullTracker:
    """A tracker that records nothing, for runs without tracking."""

    run_id = None

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        pass

    def set_tags(self, tags: dict[str, Any]) -> None:
        pass

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        pass

    def log_dict(self, values: dict[str, Any], artifact_file: str) -> None:
        pass


def default_tracking_uri(store_dir: str | Path = DEFAULT_STORE_DIR) -> str:
    """Return ``MLFLOW_TRACKING_URI`` if set, else the SQLite store in ``store_dir``."""
    configured = os.environ.get("MLFLOW_TRACKING_URI")
    if configured:
        return configured
    store = Path(store_dir).resolve()
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store / 'mlflow.db'}"


def _artifact_root(tracking_uri: str) -> str | None:
    # a local SQLite store keeps its artifacts beside the database
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri.removeprefix("sqlite:///")).parent / "artifacts").as_uri()
    return None


class MlflowTracker:
    """A `Tracker` that writes to one MLflow run.

    Args:
        client: the MLflow client of the store.
        run_id: the run to write to.
    """

    def __init__(self, client: Any, run_id: str) -> None:
        self.client = client
        self.run_id = run_id

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(key, _param_value(value)) for key, value in params.items()]
        # MLflow accepts at most 100 parameters per batch
        for start in range(0, len(items), 100):
            with signals_deferred():
                self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        items = [
            Metric(key, float(value), timestamp, step or 0)
            for key, value in metrics.items()
            if value is not None and math.isfinite(float(value))
        ]
        for start in range(0, len(items), 1000):
            with signals_deferred():
                self.client.log_batch(self.run_id, metrics=items[start : start + 1000])

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        with signals_deferred():
            self.client.log_batch(self.run_id, tags=[RunTag(key, str(value)) for key, value in tags.items()])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_dict(self, values: dict[str, Any], artifact_file: str) -> None:
        self.client.log_dict(self.run_id, values, artifact_file)

    def finish(self, status: str = "FINISHED") -> None:
        """Close the run as ``FINISHED``, ``FAILED`` or ``KILLED``."""
        with signals_deferred():
            self.client.set_terminated(self.run_id, status=status)


def _param_value(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict, tuple)) else str(value)
    return text if len(text) <= MAX_PARAM_LENGTH else text[: MAX_PARAM_LENGTH - 3] + "..."


class TrackingStore:
    """An MLflow store and the hcae experiment in it.

    Args:
        tracking_uri: MLflow tracking URI; defaults to `default_tracking_uri`.
        experiment: experiment name, created on first use.
    """

    def __init__(self, tracking_uri: str | None = None, experiment: str = EXPERIMENT_NAME) -> None:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        from mlflow.tracking import MlflowClient

        self.tracking_uri = tracking_uri or default_tracking_uri()
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            try:
                experiment_id = self.client.create_experiment(experiment, artifact_location=_artifact_root(self.tracking_uri))
            except Exception:
                # another worker created it between the lookup and the create
                found = self.client.get_experiment_by_name(experiment)
                if found is None:
                    raise
                experiment_id = found.experiment_id
        else:
            experiment_id = found.experiment_id
        self.experiment_id = experiment_id

    def start_run(
        self, name: str, tags: dict[str, Any] | None = None, parent_run_id: str | None = None
    ) -> MlflowTracker:
        """Create a run; it nests under ``parent_run_id``, else under the active fluent run if any.

        A notebook or script that already called ``mlflow.start_run()`` therefore gets the hcae run
        as a child of its own run instead of an error.
        """
        all_tags = {key: str(value) for key, value in (tags or {}).items()}
        if parent_run_id is None:
            parent_run_id = _active_fluent_run_id()
        if parent_run_id is not None:
            all_tags["mlflow.parentRunId"] = parent_run_id
        with signals_deferred():
            run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        return MlflowTracker(self.client, run.info.run_id)

    def find_runs(self, filter_string: str) -> list[Any]:
        """Return the runs of the experiment that match an MLflow filter, newest first."""
        return self.client.search_runs(
            [self.experiment_id], filter_string=filter_string, order_by=["attributes.start_time DESC"], max_results=5000
        )


def _active_fluent_run_id() -> str | None:
    import mlflow

    active = mlflow.active_run()
    return active.info.run_id if active is not None else None


# ---- what every run records beside its metrics ----


def environment_tags() -> dict[str, str]:
    """Return the git commit and dirty flag, package versions, Python and the hardware, as tags."""
    import torch

    tags = {
        "hcae.git_commit": _git(["rev-parse", "HEAD"]) or "unknown",
        "hcae.git_dirty": str(bool(_git(["status", "--porcelain", "--untracked-files=no"]))).lower(),
        "hcae.python": platform.python_version(),
        "hcae.platform": platform.platform(),
        "hcae.cpu": cpu_model(),
        "hcae.cpu_count": str(os.cpu_count()),
        "hcae.torch_threads": str(torch.get_num_threads()),
        "hcae.gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }
    for package in TRACKED_PACKAGES:
        try:
            tags[f"hcae.version.{package}"] = metadata.version(package)
        except metadata.PackageNotFoundError:
            tags[f"hcae.version.{package}"] = "not installed"
    return tags


def _git(arguments: list[str]) -> str | None:
    repo = Path(__file__).resolve().parents[1]
    try:
        result = subprocess.run(["git", *arguments], cwd=repo, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def cpu_model() -> str:
    """Return the CPU model name from /proc/cpuinfo, or what the platform module reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def write_json_artifact(tracker: Tracker, values: dict[str, Any], artifact_file: str) -> None:
    """Log a JSON file through a temporary file (for trackers without ``log_dict``)."""
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / Path(artifact_file).name
        path.write_text(json.dumps(values, indent=2))
        parent = str(Path(artifact_file).parent)
        tracker.log_artifact(path, None if parent == "." else parent)
