"""Studies: study files, scheduling, resume, failures, signals and the MLflow parent/child runs.

Most tests run a fake trial function (`fake_trial` below, selected with the variant key
``kind: test_study:fake_trial``) against real Optuna and MLflow SQLite stores in ``tmp_path``. The
fake logs a real MLflow run, as `hcae.training.run_tracked` does, and its behaviour is chosen by
the variant name: ``broken*`` raises, ``diverge*`` raises TrainingDiverged, ``nan*`` returns a NaN
objective and ``slow*`` sleeps ``$HCAE_FAKE_SLOW_SLEEP`` seconds. Each start and end is appended to
``$HCAE_FAKE_TRIAL_LOG`` so that tests can count executions across processes. The tests marked
slow train real smoke-profile models.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import mlflow
import optuna
import pytest
import yaml
from optuna.trial import TrialState

from hcae.cli import main
from hcae.errors import RunConfigError
from hcae.report import ReportPlan
from hcae.run_config import RunConfig
from hcae.study import StudyInterrupted, StudyOptions, load_study_runs, load_study_spec, run_study
from hcae.interrupts import interrupt_handlers
from hcae.study.results import compare_runs_url
from hcae.study.runner import plan_study, sweep_interrupted_trials
from hcae.study.spec import opening_comment
from hcae.study.storage import ProcessIdentity, claim_waiting_trial, is_process_alive, open_storage, trial_status
from hcae.tracking import TrackingStore

REPO_ROOT = Path(__file__).resolve().parents[1]
TESTS_DIR = Path(__file__).resolve().parent
FAKE_KIND = "test_study:fake_trial"
LOG_ENV = "HCAE_FAKE_TRIAL_LOG"


# ---- the fake trial function ----


def fake_trial(run: RunConfig, store: TrackingStore, output_dir: Path, parent_run_id=None, tags=None, reporter=None, on_start=None):
    """Log an MLflow run like `run_tracked` and return made-up scores, after an optional sleep."""
    tags = dict(tags or {})
    variant = tags.get("hcae.variant", "")
    _log_event("start", variant, run.seed)
    tracker = store.start_run(run.display_name(), tags=tags, parent_run_id=parent_run_id)
    if on_start is not None:
        on_start(tracker.run_id)
    try:
        tracker.log_params({"seed": run.seed, "preset": run.model.get("preset"), "kernel": run.model_config().conv_kernel_size})
        seconds = float(os.environ.get("HCAE_FAKE_SLOW_SLEEP", "60")) if variant.startswith("slow") else float(os.environ.get("HCAE_FAKE_TRIAL_SLEEP", "0"))
        for step in range(2):
            time.sleep(seconds / 2)
            if reporter is not None:
                reporter(0.1 * (step + 1), step)
        if variant.startswith("broken"):
            raise RuntimeError(f"variant {variant} is broken on purpose")
        if variant.startswith("prune"):
            raise optuna.TrialPruned("dev score below the median")
        if variant.startswith("diverge"):
            # imported here: hcae.training loads sentence-transformers, which slows every worker's start
            from hcae.training import TrainingDiverged

            raise TrainingDiverged("loss is nan at step 3")
        metrics = _fake_metrics(run)
        if variant.startswith("nan"):
            metrics["dev/mean"] = float("nan")
        tracker.log_metrics(metrics)
    except (KeyboardInterrupt, SystemExit):
        tracker.set_tags({"hcae.error": "interrupted"})
        tracker.finish("KILLED")
        raise
    except Exception as error:
        tracker.set_tags({"hcae.error": f"{type(error).__name__}: {error}"})
        tracker.finish("FAILED")
        raise
    tracker.finish("FINISHED")
    _log_event("end", variant, run.seed)
    return metrics


# the seed whose training loss `nan_loss_trial` turns into NaN
NAN_SEED_ENV = "HCAE_TEST_NAN_SEED"


def nan_loss_trial(run: RunConfig, store: TrackingStore, output_dir: Path, **keywords):
    """Train and evaluate for real with `run_tracked`, with a NaN loss when the seed is ``$HCAE_TEST_NAN_SEED``.

    The patch is undone when the run ends.
    """
    from hcae.training import run_tracked

    nan_seed = os.environ.get(NAN_SEED_ENV)
    if nan_seed is not None and int(nan_seed) == run.seed:
        from sentence_transformers.sentence_transformer.losses import EmbedDistillLoss

        original_forward = EmbedDistillLoss.forward

        def nan_forward(self, *args, **kwargs):
            return original_forward(self, *args, **kwargs) * float("nan")

        EmbedDistillLoss.forward = nan_forward
        try:
            return run_tracked(run, store, output_dir, **keywords)
        finally:
            EmbedDistillLoss.forward = original_forward
    return run_tracked(run, store, output_dir, **keywords)


def _fake_metrics(run: RunConfig) -> dict[str, float]:
    config = run.model_config()
    score = 0.5 + (0.1 if config.feed_forward == "swiglu" else 0.0) + 0.001 * run.seed
    # a search over the kernel size and the learning rate has its optimum at 7 and 1e-3
    score -= 0.01 * abs(config.conv_kernel_size - 7) + abs(math.log10(run.training.distill.learning_rate) + 3) * 0.05
    return {
        "dev/stsb_spearman": score + 0.02,
        "dev/scifact_ndcg_at_10": score - 0.02,
        "dev/mean": score,
        "test/stsb_spearman": score + 0.01,
        "test/scifact_ndcg_at_10": score - 0.03,
        "train/loss": 0.25,
    }


def _log_event(event: str, variant: str, seed: int) -> None:
    path = os.environ.get(LOG_ENV)
    if not path:
        return
    # one write per line in append mode, so that lines of several processes do not interleave
    with open(path, "a", encoding="utf-8") as log:
        log.write(f"{event} {variant} {seed} {os.getpid()}\n")


def _events(path: Path) -> list[tuple[str, str, int, int]]:
    if not path.exists():
        return []
    return [(event, variant, int(seed), int(pid)) for event, variant, seed, pid in (line.split() for line in path.read_text().splitlines())]


def _count(path: Path, event: str, variant: str, seed: int = 0) -> int:
    return sum(1 for item in _events(path) if item[:3] == (event, variant, seed))


# ---- stores and study files ----


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory) -> Path:
    """An MLflow SQLite database with its tables created once: creating them takes about 7 s."""
    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    TrackingStore(f"sqlite:///{path}", experiment="template")
    return path


@pytest.fixture
def stores(tmp_path, mlflow_template, monkeypatch) -> SimpleNamespace:
    """A fresh MLflow store, Optuna storage, output folder and fake-trial log in ``tmp_path``."""
    store_dir = tmp_path / "mlruns"
    store_dir.mkdir()
    shutil.copy(mlflow_template, store_dir / "mlflow.db")
    log = tmp_path / "trials.log"
    monkeypatch.setenv(LOG_ENV, str(log))
    monkeypatch.setenv("HCAE_FAKE_TRIAL_SLEEP", "0")
    return SimpleNamespace(
        tracking_uri=f"sqlite:///{store_dir / 'mlflow.db'}",
        storage=f"sqlite:///{store_dir / 'optuna.db'}",
        output_dir=tmp_path / "runs",
        log=log,
        root=tmp_path,
    )


def _options(stores: SimpleNamespace, **overrides) -> StudyOptions:
    """Options for `run_study` on the test stores.

    One worker runs its trials in the test process, which saves the few seconds that starting a
    worker process costs per trial. The tests of worker processes pass ``in_process=False`` or
    several workers, and the tests through the command line use a process per trial.
    """
    values = {"storage": stores.storage, "tracking_uri": stores.tracking_uri, "output_dir": stores.output_dir, **overrides}
    values.setdefault("in_process", values.get("workers", 1) == 1)
    return StudyOptions(**values)


def _write_study(folder: Path, variants: dict, seeds=(0,), name: str = "fake", kind: str = FAKE_KIND, **sections) -> Path:
    values = {
        "study": name,
        "base": {"profile": "quick", "model": {"preset": "v1.0"}},
        "objective": {"metric": "dev/mean", "direction": "maximize"},
        "grid": {"seeds": list(seeds), "variants": {key: {"kind": kind, **(value or {})} for key, value in variants.items()}},
        **sections,
    }
    path = folder / f"{name}.yaml"
    path.write_text(f"# Hypothesis: a test study.\n# Run: hcae ablate {path.name}\n" + yaml.safe_dump(values, sort_keys=False))
    return path


def _load_optuna(stores: SimpleNamespace, name: str = "fake") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=stores.storage)


def _trials_by_variant(study: optuna.Study) -> dict[str, list[optuna.trial.FrozenTrial]]:
    groups: dict[str, list] = {}
    for trial in study.get_trials():
        groups.setdefault(f"{trial.user_attrs['variant']}/{trial.user_attrs['seed']}", []).append(trial)
    return groups


def _cli_env(stores: SimpleNamespace, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), str(REPO_ROOT), env.get("PYTHONPATH", "")])
    env[LOG_ENV] = str(stores.log)
    env.update(extra)
    return env


def _cli_args(stores: SimpleNamespace, study_file: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "hcae.cli", "ablate", str(study_file),
        "--storage", stores.storage, "--tracking-uri", stores.tracking_uri, "--output-dir", str(stores.output_dir), *extra,
    ]


def _wait_for(condition, timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# ---- study files ----


def test_shipped_studies_validate():
    studies = sorted(path for path in (REPO_ROOT / "ablations").glob("*.yaml") if path.name != "base.yaml")
    assert studies, "ablations/ has no study file"
    for path in studies:
        spec = load_study_spec(path)
        header = opening_comment(path.read_text())
        assert "Hypothesis:" in header, f"{path.name} does not open with a Hypothesis: comment"
        assert f"hcae ablate ablations/{path.name}" in header, f"{path.name} does not give the command that runs it"
        assert spec.grid_points() or spec.search is not None
        plan = ReportPlan.from_dict(spec.report)
        assert set(plan.path) <= {variant.name for variant in spec.variants}


@pytest.mark.parametrize("profile", [None, "smoke"])
def test_every_ablation_yaml_builds(profile):
    """Every YAML in ablations/ loads, and every HCAE model it defines builds and runs a forward pass."""
    import torch

    from hcae.modeling import HcaeModel
    from hcae.run_config import load_run_config

    runs = [load_run_config(REPO_ROOT / "ablations" / "base.yaml", {"profile": profile} if profile else None)]
    for path in sorted((REPO_ROOT / "ablations").glob("*.yaml")):
        if path.name == "base.yaml":
            continue
        spec = load_study_spec(path, profile=profile)
        if profile:
            assert spec.name.endswith(f"-{profile}")
        runs.extend(spec.run_config(point) for point in spec.grid_points())
    built = 0
    for run in runs:
        if run.architecture != "hcae":
            continue
        torch.manual_seed(0)
        model = HcaeModel(run.model_config()).eval()
        with torch.no_grad():
            output = model(torch.randint(0, 100, (2, 12)), attention_mask=torch.ones(2, 12, dtype=torch.long))
        assert output.pooler_output.shape == (2, run.model_config().hidden_size)
        assert torch.isfinite(output.pooler_output).all()
        built += 1
    assert built >= 8


def test_variant_configs_resolve(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("profile: quick\nseed: 3\nmodel: {preset: v1.0}\ntraining: {distill: {steps: 50}}\n")
    study = tmp_path / "study.yaml"
    study.write_text(textwrap.dedent("""\
        # Hypothesis: kernel 5 beats kernel 7.
        # Run: hcae ablate study.yaml
        base: base.yaml
        grid:
          variants:
            k5: {model: {preset: v1.1, conv_kernel_size: 5}}
            k7: {training: {contrastive: {enabled: false}}}
        """))
    spec = load_study_spec(study)
    assert spec.name == "study"
    assert spec.seeds == (3,)
    assert spec.description.startswith("Hypothesis: kernel 5")
    k5 = spec.run_config(spec.grid_points()[0])
    k7 = spec.run_config(spec.grid_points()[1])
    assert k5.model_config().conv_kernel_size == 5
    assert k5.model_config().feed_forward == "swiglu"
    assert k5.training.distill.steps == 50
    assert k7.model == {"preset": "v1.0"}
    assert k7.training.contrastive.enabled is False
    assert k7.seed == 3


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("base: {model: {preset: v1.0}}\ngrid: {variants: {a: {}}}\nvariantz: 1\n", "unknown key 'variantz'"),
        ("grid: {variants: {a: {}}}\n", "missing key 'base'"),
        ("base: nowhere.yaml\ngrid: {variants: {a: {}}}\n", "base='nowhere.yaml' not found"),
        ("base: {}\ngrid: {variants: {k9: {model: {preset: v1.0, kernel: 9}}}}\n", "variant 'k9'"),
        ("base: {}\ngrid: {variants: {k9: {model: {preset: v1.0, kernel: 9}}}}\n", "unknown model field 'kernel'"),
        ("base: {}\ngrid: {variants: {lr: {training: {distil: {steps: 1}}}}}\n", "unknown key 'training.distil'"),
        ("base: {}\ngrid: {variants: {a: {}}, seed: [0]}\n", "unknown key 'grid.seed'"),
        ("base: {}\ngrid: {variants: {a: {kind: nonsense}}}\n", "kind='nonsense' is invalid"),
        ("base: {}\nobjective: {metric: test/mean}\ngrid: {variants: {a: {}}}\n", "objective.metric='test/mean' is invalid"),
        ("base: {}\nobjective: {direction: up}\ngrid: {variants: {a: {}}}\n", "objective.direction='up' is invalid"),
        ("base: {}\n", "give exactly one of 'grid'"),
        ("base: {}\nsearch: {trials: 2, space: {model.kernel: {choices: [3]}}}\n", "unknown model field 'kernel'"),
        ("base: {}\nsearch: {trials: 2, space: {training.distill.learning_rate: {low: 1, high: 0.1}}}\n", "low=1 >= high=0.1"),
        ("base: {}\nsearch: {trials: 0, space: {model.conv_kernel_size: {choices: [3]}}}\n", "search.trials=0 is invalid"),
        ("base: {}\nprofile: tiny\ngrid: {variants: {a: {}}}\n", "profile='tiny' is invalid"),
        ("base: {}\ngrid: {variants: {a: {}}}\nreport: {path: [a, b]}\n", "report.path names variant 'b'"),
        ("base: {}\ngrid: {variants: {a: {}}}\nreport: {controls: {c: a}}\n", "report.controls names variant 'c'"),
    ],
)
def test_invalid_study_exits_2(tmp_path, capsys, content, message):
    study = tmp_path / "bad.yaml"
    study.write_text(content)
    assert main(["ablate", str(study), "--check"]) == 2
    error = capsys.readouterr().err
    assert message in error
    assert "Traceback" not in error


def test_invalid_study_subprocess_exits_2(tmp_path):
    study = tmp_path / "bad.yaml"
    study.write_text("base: {}\ngrid: {variants: {v1.2: {model: {preset: v1.2}}}}\n")
    result = subprocess.run([sys.executable, "-m", "hcae.cli", "ablate", str(study)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "variant 'v1.2'" in result.stderr
    assert "unknown preset 'v1.2'" in result.stderr
    assert "Traceback" not in result.stderr


def test_profile_override_renames_study(tmp_path):
    study = _write_study(tmp_path, {"a": {}}, name="base_name")
    assert load_study_spec(study).name == "base_name"
    assert load_study_spec(study, profile="smoke").name == "base_name-smoke"
    assert load_study_spec(study, profile="smoke", study_name="mine").name == "mine"
    assert load_study_spec(study, profile="quick").name == "base_name"


# ---- grid, resume and MLflow linkage ----


def test_grid_runs_every_point_once(stores):
    study_file = _write_study(stores.root, {"a": {}, "b": {"model": {"preset": "v1.1"}}}, seeds=(0, 1))
    result = run_study(load_study_spec(study_file), _options(stores))

    assert result.exit_code == 0
    assert result.counts["complete"] == 4
    assert len(result.table) == 4
    study = _load_optuna(stores)
    assert [trial.state for trial in study.get_trials()] == [TrialState.COMPLETE] * 4
    groups = _trials_by_variant(study)
    assert sorted(groups) == ["a/0", "a/1", "b/0", "b/1"]
    assert all(len(trials) == 1 for trials in groups.values())
    for variant, seed in [("a", 0), ("a", 1), ("b", 0), ("b", 1)]:
        assert _count(stores.log, "end", variant, seed) == 1
    assert {pid for *_, pid in _events(stores.log)} == {os.getpid()}
    # v1.1 uses SwiGLU, which the fake scores 0.1 higher
    assert result.best["variant"] == "b"
    assert groups["b/1"][0].value == pytest.approx(groups["a/1"][0].value + 0.1)
    assert groups["a/0"][0].intermediate_values == {0: pytest.approx(0.1), 1: pytest.approx(0.2)}


def test_in_process_with_two_workers_raises(stores):
    study_file = _write_study(stores.root, {"a": {}})
    with pytest.raises(RunConfigError, match="workers=2 with in_process"):
        run_study(load_study_spec(study_file), _options(stores, workers=2, in_process=True))


def test_mlflow_parent_child_linkage(stores):
    study_file = _write_study(stores.root, {"a": {}, "b": {}})
    result = run_study(load_study_spec(study_file), _options(stores))

    store = TrackingStore(stores.tracking_uri)
    parent = store.client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["hcae.role"] == "study"
    assert parent.data.tags["mlflow.note.content"].startswith("Hypothesis: a test study.")
    assert parent.data.params["objective_metric"] == "dev/mean"
    assert parent.data.metrics["best/dev/mean"] == pytest.approx(result.best["value"])
    assert "summary.csv" in [item.path for item in store.client.list_artifacts(result.parent_run_id)]

    study = _load_optuna(stores)
    assert study.user_attrs["mlflow_parent_run_id"] == result.parent_run_id
    for trial in study.get_trials():
        run = store.client.get_run(trial.user_attrs["mlflow_run_id"])
        assert run.data.tags["mlflow.parentRunId"] == result.parent_run_id
        assert run.data.tags["hcae.trial_number"] == str(trial.number)
        assert run.data.tags["hcae.trial_uid"] == trial.user_attrs["uid"]
        assert run.data.tags["hcae.trial_state"] == "COMPLETE"
        assert run.info.status == "FINISHED"
        assert run.data.metrics["dev/mean"] == pytest.approx(trial.value)

    runs = load_study_runs("fake", stores.tracking_uri)
    assert list(runs["trial_number"]) == [0, 1]
    assert list(runs["variant"]) == ["a", "b"]
    assert set(runs["parent_run_id"]) == {result.parent_run_id}
    assert "metrics.dev/mean" in runs
    assert "params.seed" in runs
    with_parent = load_study_runs("fake", stores.tracking_uri, include_parent=True)
    assert len(with_parent) == 3


def test_resume_reruns_nothing(stores):
    study_file = _write_study(stores.root, {"a": {}, "b": {}}, seeds=(0, 1))
    first = run_study(load_study_spec(study_file), _options(stores))
    events_before = _events(stores.log)

    second = run_study(load_study_spec(study_file), _options(stores))

    assert _events(stores.log) == events_before
    assert len(_load_optuna(stores).get_trials()) == 4
    assert second.parent_run_id == first.parent_run_id
    assert second.counts["complete"] == 4
    parents = TrackingStore(stores.tracking_uri).find_runs("tags.`hcae.role` = 'study'")
    assert len(parents) == 1


def test_added_variant_runs_alone(stores):
    run_study(load_study_spec(_write_study(stores.root, {"a": {}})), _options(stores))
    result = run_study(load_study_spec(_write_study(stores.root, {"a": {}, "c": {}})), _options(stores))

    assert result.counts["complete"] == 2
    assert _count(stores.log, "start", "a") == 1
    assert _count(stores.log, "start", "c") == 1


def test_changed_base_of_finished_point_raises(stores):
    first = run_study(load_study_spec(_write_study(stores.root, {"a": {}})), _options(stores))
    changed = _write_study(stores.root, {"a": {"training": {"distill": {"steps": 7}}}})
    with pytest.raises(RunConfigError, match="variant 'a' seed 0 finished in trial 0 with a different run config"):
        run_study(load_study_spec(changed), _options(stores))
    parent = TrackingStore(stores.tracking_uri).client.get_run(first.parent_run_id)
    assert parent.info.status == "FINISHED"


def test_unexpected_error_fails_parent_run(stores, monkeypatch):
    import hcae.study.runner as runner

    def broken_plan(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(runner, "plan_study", broken_plan)
    with pytest.raises(OSError, match="disk full"):
        run_study(load_study_spec(_write_study(stores.root, {"a": {}})), _options(stores))
    [parent] = TrackingStore(stores.tracking_uri).find_runs("tags.`hcae.role` = 'study'")
    assert parent.info.status == "FAILED"
    assert parent.data.tags["hcae.error"] == "OSError: disk full"


def test_changed_objective_raises(stores):
    run_study(load_study_spec(_write_study(stores.root, {"a": {}})), _options(stores))
    changed = _write_study(stores.root, {"a": {}}, objective={"metric": "dev/stsb_spearman", "direction": "maximize"})
    with pytest.raises(RunConfigError, match="different objective_metric"):
        run_study(load_study_spec(changed), _options(stores))


def test_user_mlflow_run_nests_study(stores, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", stores.tracking_uri)
    mlflow.set_tracking_uri(stores.tracking_uri)
    store = TrackingStore(stores.tracking_uri)
    study_file = _write_study(stores.root, {"a": {}})
    try:
        with mlflow.start_run(experiment_id=store.experiment_id, run_name="my notebook run") as outer:
            result = run_study(load_study_spec(study_file), _options(stores))
    finally:
        mlflow.set_tracking_uri(None)

    parent = store.client.get_run(result.parent_run_id)
    assert parent.data.tags["mlflow.parentRunId"] == outer.info.run_id
    trial_run = store.client.get_run(_load_optuna(stores).get_trials()[0].user_attrs["mlflow_run_id"])
    assert trial_run.data.tags["mlflow.parentRunId"] == result.parent_run_id
    assert store.client.get_run(outer.info.run_id).info.status == "FINISHED"


# ---- failures ----


def test_failing_trial_recorded_study_continues(stores):
    study_file = _write_study(stores.root, {"a": {}, "broken": {}, "diverge": {}, "nan": {}, "c": {}})
    result = run_study(load_study_spec(study_file), _options(stores))

    assert result.exit_code == 1
    statuses = dict(zip(result.table["variant"], result.table["status"]))
    assert statuses == {"a": "COMPLETE", "broken": "FAILED", "diverge": "FAILED", "nan": "FAILED", "c": "COMPLETE"}
    groups = _trials_by_variant(_load_optuna(stores))
    store = TrackingStore(stores.tracking_uri)
    expected_errors = {
        "broken": "RuntimeError: variant broken is broken on purpose",
        "diverge": "TrainingDiverged: loss is nan at step 3",
        "nan": "objective dev/mean is nan",
    }
    for variant, message in expected_errors.items():
        trial = groups[f"{variant}/0"][0]
        assert trial.state == TrialState.FAIL
        assert trial.user_attrs["error"] == message
        assert trial_status(trial) == "FAILED"
        run = store.client.get_run(trial.user_attrs["mlflow_run_id"])
        assert run.info.status == "FAILED"
        assert run.data.tags["hcae.trial_state"] == "FAIL"
        assert "hcae.error" in run.data.tags
    assert "add --retry-failed to retry them" in result.format_summary()
    assert "broken seed 0 (trial 1): RuntimeError" in result.format_summary()


def test_pruned_trial_recorded_not_rerun(stores):
    study_file = _write_study(stores.root, {"prune": {}, "a": {}})
    first = run_study(load_study_spec(study_file), _options(stores))
    second = run_study(load_study_spec(study_file), _options(stores))

    assert first.exit_code == 0
    assert first.counts["pruned"] == 1
    assert second.counts["pruned"] == 1
    assert _count(stores.log, "start", "prune") == 1
    pruned = _trials_by_variant(_load_optuna(stores))["prune/0"][0]
    assert pruned.state == TrialState.PRUNED
    assert pruned.user_attrs["pruned"] == "dev score below the median"
    run = TrackingStore(stores.tracking_uri).client.get_run(pruned.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED"
    assert run.data.tags["hcae.trial_state"] == "PRUNED"


def test_failed_points_retried_only_when_asked(stores):
    study_file = _write_study(stores.root, {"a": {}, "broken": {}})
    run_study(load_study_spec(study_file), _options(stores))
    run_study(load_study_spec(study_file), _options(stores))
    assert _count(stores.log, "start", "broken") == 1

    result = run_study(load_study_spec(study_file), _options(stores, retry_failed=True))
    assert _count(stores.log, "start", "broken") == 2
    assert _count(stores.log, "start", "a") == 1
    attempts = _trials_by_variant(_load_optuna(stores))["broken/0"]
    assert [trial.state for trial in attempts] == [TrialState.FAIL, TrialState.FAIL]
    assert attempts[1].user_attrs["retry_of"] == attempts[0].number
    assert result.table.set_index("variant").loc["broken", "attempts"] == 2


def test_missing_trial_function_fails_before_training(stores):
    study_file = _write_study(stores.root, {"a": {}}, kind="no_such_module_here:run")
    with pytest.raises(RunConfigError, match="cannot import module 'no_such_module_here'"):
        run_study(load_study_spec(study_file), _options(stores))
    assert not Path(stores.storage.removeprefix("sqlite:///")).exists()


# ---- the queue: duplicates, workers, stale trials ----


def test_point_queued_twice_runs_once(stores):
    spec = load_study_spec(_write_study(stores.root, {"a": {}, "b": {}}))
    storage = open_storage(stores.storage)
    study = optuna.create_study(study_name=spec.name, storage=storage, direction="maximize")
    for key, value in {"uid": "u" * 32, "mode": "grid", "objective_metric": "dev/mean"}.items():
        study.set_user_attr(key, value)
    plan_study(study, storage, spec)
    # a second study process that planned at the same moment queued point a again
    study.enqueue_trial({}, user_attrs=dict(study.get_trials()[0].user_attrs, uid="v" * 32))
    assert len(study.get_trials(states=(TrialState.WAITING,))) == 3

    result = run_study(spec, _options(stores))

    assert _count(stores.log, "start", "a") == 1
    assert _count(stores.log, "start", "b") == 1
    trials = _load_optuna(stores).get_trials()
    assert [trial_status(trial) for trial in trials] == ["COMPLETE", "COMPLETE", "DUPLICATE"]
    assert trials[2].user_attrs["duplicate_of"] == 0
    assert result.counts["complete"] == 2
    assert result.counts["points"] == 2


def test_two_workers_run_each_point_once(stores):
    variants = {name: {} for name in ("a", "b", "c")}
    study_file = _write_study(stores.root, variants, seeds=(0, 1))
    result = subprocess.run(
        _cli_args(stores, study_file, "--workers", "2"),
        env=_cli_env(stores, HCAE_FAKE_TRIAL_SLEEP="1.5"),
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    study = _load_optuna(stores)
    assert [trial.state for trial in study.get_trials()] == [TrialState.COMPLETE] * 6
    for variant in variants:
        for seed in (0, 1):
            assert _count(stores.log, "start", variant, seed) == 1
    events = _events(stores.log)
    trial_pids = [pid for event, _, _, pid in events if event == "start"]
    assert len(set(trial_pids)) == 6, "every trial should run in a fresh process"
    running, max_running = 0, 0
    for event, *_ in events:
        running += 1 if event == "start" else -1
        max_running = max(max_running, running)
    assert max_running == 2, "two trials should have run side by side, and never more"
    assert "6 complete" in result.stdout


def test_claim_gives_a_trial_to_one_process(stores):
    storage = open_storage(stores.storage)
    study = optuna.create_study(study_name="queue", storage=storage)
    study.enqueue_trial({}, user_attrs={"point": "p"})
    identity = ProcessIdentity.current()
    first = claim_waiting_trial(study, storage, identity)
    second = claim_waiting_trial(optuna.load_study(study_name="queue", storage=open_storage(stores.storage)), storage, identity)
    assert first is not None
    assert first.state == TrialState.RUNNING
    assert first.user_attrs["pid"] == os.getpid()
    assert second is None


RACE_CLAIMS = """
import sys, time
import optuna
from optuna.trial import TrialState
from hcae.study.storage import open_storage

optuna.logging.set_verbosity(optuna.logging.ERROR)
storage = open_storage(sys.argv[1])
study_id = storage.get_study_id_from_name("race")
start = float(sys.argv[2])
while time.time() < start:
    time.sleep(0.001)
taken = []
for number in range(int(sys.argv[3])):
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
    if storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
        taken.append(number)
print(" ".join(map(str, taken)))
"""


def test_sqlite_claims_are_atomic(stores):
    """Two processes set the same WAITING trials RUNNING at the same moment: each trial goes to one."""
    count = 300
    study = optuna.create_study(study_name="race", storage=open_storage(stores.storage))
    for _ in range(count):
        study.enqueue_trial({})
    start = str(time.time() + 15)
    command = [sys.executable, "-c", RACE_CLAIMS, stores.storage, start, str(count)]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [set(process.communicate(timeout=120)[0].split()) for process in processes]

    assert all(process.returncode == 0 for process in processes)
    assert outputs[0].isdisjoint(outputs[1])
    assert len(outputs[0] | outputs[1]) == count


def test_dead_process_trial_swept(stores):
    storage = open_storage(stores.storage)
    study = optuna.create_study(study_name="stale", storage=storage)
    study.enqueue_trial({}, user_attrs={"point": "dead", "uid": "d" * 32})
    study.enqueue_trial({}, user_attrs={"point": "alive", "uid": "e" * 32})
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    dead_pid = int(finished.stdout)
    assert not is_process_alive(dead_pid, None)
    dead = ProcessIdentity(ProcessIdentity.current().host, dead_pid, None)
    claim_waiting_trial(study, storage, dead)
    claim_waiting_trial(study, storage, ProcessIdentity.current())

    marked = sweep_interrupted_trials(study, storage, TrackingStore(stores.tracking_uri), "no-study-uid")

    assert marked == [0]
    dead_trial, alive_trial = study.get_trials()
    assert trial_status(dead_trial) == "INTERRUPTED"
    assert f"process {dead_pid}" in dead_trial.user_attrs["interrupted"]
    assert alive_trial.state == TrialState.RUNNING


def test_reused_pid_counts_as_dead():
    identity = ProcessIdentity.current()
    assert is_process_alive(identity.pid, identity.start_ticks)
    if identity.start_ticks is not None:
        assert not is_process_alive(identity.pid, identity.start_ticks + 1)


# ---- signals ----


def _start_study_process(stores: SimpleNamespace, study_file: Path, *extra: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        _cli_args(stores, study_file, *extra),
        env=_cli_env(stores, **env),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT])
def test_signal_marks_trial_interrupted(stores, signal_number):
    study_file = _write_study(stores.root, {"a": {}, "slow": {}, "c": {}})
    process = _start_study_process(stores, study_file, HCAE_FAKE_SLOW_SLEEP="120")
    _wait_for(lambda: _count(stores.log, "start", "slow") == 1, 120, "the slow trial to start")
    process.send_signal(signal_number)
    stdout, stderr = process.communicate(timeout=120)

    assert process.returncode == 128 + signal_number, stderr[-3000:]
    assert f"stopped by {signal.Signals(signal_number).name}" in stdout
    groups = _trials_by_variant(_load_optuna(stores))
    assert groups["a/0"][0].state == TrialState.COMPLETE
    interrupted = groups["slow/0"][0]
    assert interrupted.state == TrialState.FAIL
    assert interrupted.user_attrs["interrupted"] == signal.Signals(signal_number).name
    assert groups["c/0"][0].state == TrialState.WAITING
    assert "mlflow_run_id" in interrupted.user_attrs, stderr[-3000:]
    store = TrackingStore(stores.tracking_uri)
    assert store.client.get_run(interrupted.user_attrs["mlflow_run_id"]).info.status == "KILLED"
    parent_id = _load_optuna(stores).user_attrs["mlflow_parent_run_id"]
    assert store.client.get_run(parent_id).info.status == "KILLED"

    resumed = subprocess.run(_cli_args(stores, study_file), env=_cli_env(stores, HCAE_FAKE_SLOW_SLEEP="0"),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _count(stores.log, "start", "a") == 1
    assert _count(stores.log, "start", "slow") == 2
    assert _count(stores.log, "end", "slow") == 1
    assert _count(stores.log, "start", "c") == 1
    assert "3 complete" in resumed.stdout


def test_sigkill_trial_swept_and_rerun(stores):
    # a single queued trial runs in the study process itself, so after SIGKILL no process can mark it
    study_file = _write_study(stores.root, {"slow": {}})
    process = _start_study_process(stores, study_file, HCAE_FAKE_SLOW_SLEEP="120")
    _wait_for(lambda: _count(stores.log, "start", "slow") == 1, 120, "the slow trial to start")
    # the trial logs its start just before it records its MLflow run id
    _wait_for(lambda: "mlflow_run_id" in _load_optuna(stores).get_trials()[0].user_attrs, 60, "the trial's MLflow run id")
    process.kill()
    process.communicate(timeout=60)

    killed = _trials_by_variant(_load_optuna(stores))["slow/0"][0]
    assert killed.state == TrialState.RUNNING
    store = TrackingStore(stores.tracking_uri)
    killed_run_id = killed.user_attrs["mlflow_run_id"]
    assert store.client.get_run(killed_run_id).info.status == "RUNNING"

    resumed = subprocess.run(_cli_args(stores, study_file), env=_cli_env(stores, HCAE_FAKE_SLOW_SLEEP="0"),
                             capture_output=True, text=True, timeout=300)

    assert resumed.returncode == 0, resumed.stderr[-3000:]
    attempts = _trials_by_variant(_load_optuna(stores))["slow/0"]
    assert [trial_status(trial) for trial in attempts] == ["INTERRUPTED", "COMPLETE"]
    assert f"process {process.pid}" in attempts[0].user_attrs["interrupted"]
    assert store.client.get_run(killed_run_id).info.status == "KILLED"
    assert _count(stores.log, "end", "slow") == 1


def test_sigkill_of_the_study_stops_its_worker(stores):
    study_file = _write_study(stores.root, {"slow": {}, "c": {}})
    process = _start_study_process(stores, study_file, HCAE_FAKE_SLOW_SLEEP="120")
    # killed as soon as the trial starts, while its MLflow run is being created
    _wait_for(lambda: _count(stores.log, "start", "slow") == 1, 180, "the slow trial to start", interval=0.005)
    process.kill()
    # the pipes close only when the worker, which inherited them, has exited too
    _, stderr = process.communicate(timeout=120)

    worker_pid = next(pid for event, variant, _, pid in _events(stores.log) if (event, variant) == ("start", "slow"))
    assert worker_pid != process.pid
    assert not is_process_alive(worker_pid, None)
    groups = _trials_by_variant(_load_optuna(stores))
    killed = groups["slow/0"][0]
    assert trial_status(killed) == "INTERRUPTED", stderr[-3000:]
    assert killed.user_attrs["interrupted"] == "SIGTERM"
    store = TrackingStore(stores.tracking_uri)
    assert store.client.get_run(killed.user_attrs["mlflow_run_id"]).info.status == "KILLED"
    assert groups["c/0"][0].state == TrialState.WAITING


def test_sigterm_with_two_workers(stores):
    study_file = _write_study(stores.root, {"slow1": {}, "slow2": {}, "c": {}})
    process = _start_study_process(stores, study_file, "--workers", "2", HCAE_FAKE_SLOW_SLEEP="120")
    _wait_for(lambda: _count(stores.log, "start", "slow1") + _count(stores.log, "start", "slow2") == 2, 180, "both slow trials to start")
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=180)

    assert process.returncode == 143, stderr[-3000:]
    groups = _trials_by_variant(_load_optuna(stores))
    store = TrackingStore(stores.tracking_uri)
    for variant in ("slow1", "slow2"):
        trial = groups[f"{variant}/0"][0]
        assert trial_status(trial) == "INTERRUPTED"
        assert store.client.get_run(trial.user_attrs["mlflow_run_id"]).info.status == "KILLED"
    assert groups["c/0"][0].state == TrialState.WAITING


def test_interrupt_in_process_raises_with_result(stores):
    study_file = _write_study(stores.root, {"a": {}, "slow": {}})
    os.environ["HCAE_FAKE_SLOW_SLEEP"] = "30"
    try:

        def send_when_slow_starts() -> None:
            _wait_for(lambda: _count(stores.log, "start", "slow") == 1, 60, "the slow trial to start")
            os.kill(os.getpid(), signal.SIGTERM)

        sender = threading.Thread(target=send_when_slow_starts, daemon=True)
        sender.start()
        with pytest.raises(StudyInterrupted) as caught:
            run_study(load_study_spec(study_file), _options(stores))
        sender.join(5)
    finally:
        del os.environ["HCAE_FAKE_SLOW_SLEEP"]

    assert caught.value.exit_code == 143
    assert caught.value.result.counts["complete"] == 1
    assert caught.value.result.counts["interrupted"] == 1
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_interrupt_handlers_restore_previous():
    before = signal.getsignal(signal.SIGINT)
    with interrupt_handlers():
        assert signal.getsignal(signal.SIGINT) is not before
        with pytest.raises(StudyInterrupted) as caught:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert caught.value.signal_name == "SIGINT"
    assert signal.getsignal(signal.SIGINT) is before


def test_parent_death_signal_counts_once():
    # Linux can send the parent-death signal several times as the threads of the dying study
    # process exit. Counted as three signals, they would end the worker before it marks its trial.
    code = textwrap.dedent("""\
        import os, time
        from hcae.interrupts import PARENT_DIED_SIGNAL, StudyInterrupted, interrupt_handlers
        try:
            with interrupt_handlers(parent_death=True):
                try:
                    os.kill(os.getpid(), PARENT_DIED_SIGNAL)
                    time.sleep(5)
                except StudyInterrupted as interrupt:
                    for _ in range(4):
                        os.kill(os.getpid(), PARENT_DIED_SIGNAL)
                        time.sleep(0.05)
                    raise
        except StudyInterrupted as interrupt:
            print("stopped by", interrupt.signal_name)
        """)
    finished = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert finished.stdout.strip() == "stopped by SIGTERM"


# ---- search ----


def test_search_samples_and_resumes(stores):
    study_file = _write_study(stores.root, {"a": {}})
    values = yaml.safe_load(study_file.read_text())
    del values["grid"]
    values["search"] = {
        "trials": 4,
        "kind": FAKE_KIND,
        "sampler_seed": 1,
        "space": {
            "model.conv_kernel_size": {"choices": [3, 5, 7]},
            "training.distill.learning_rate": {"low": 1.0e-4, "high": 1.0e-2, "log": True},
        },
    }
    study_file.write_text(yaml.safe_dump(values))
    result = run_study(load_study_spec(study_file), _options(stores))

    assert result.counts["complete"] == 4
    trials = _load_optuna(stores).get_trials()
    assert len(trials) == 4
    for trial in trials:
        assert trial.params["model.conv_kernel_size"] in (3, 5, 7)
        assert 1e-4 <= trial.params["training.distill.learning_rate"] <= 1e-2
        run = TrackingStore(stores.tracking_uri).client.get_run(trial.user_attrs["mlflow_run_id"])
        assert run.data.params["kernel"] == str(trial.params["model.conv_kernel_size"])
    assert list(result.table["dev/mean"]) == sorted(result.table["dev/mean"], reverse=True)
    assert "model.conv_kernel_size" in result.table

    again = run_study(load_study_spec(study_file), _options(stores))
    assert len(_load_optuna(stores).get_trials()) == 4
    assert again.counts["complete"] == 4

    values["search"]["trials"] = 6
    study_file.write_text(yaml.safe_dump(values))
    with pytest.raises(RunConfigError, match="different base config, seed, kind, objective or search space"):
        values["search"]["space"]["model.conv_kernel_size"] = {"choices": [3, 9]}
        changed = stores.root / "changed.yaml"
        changed.write_text(yaml.safe_dump(values))
        run_study(load_study_spec(changed, study_name="fake"), _options(stores))


def test_search_topped_up_to_trials(stores):
    study_file = _write_study(stores.root, {"a": {}})
    values = yaml.safe_load(study_file.read_text())
    del values["grid"]
    values["search"] = {"trials": 2, "kind": FAKE_KIND, "space": {"model.conv_kernel_size": {"choices": [3, 5, 7]}}}
    study_file.write_text(yaml.safe_dump(values))
    run_study(load_study_spec(study_file), _options(stores))
    values["search"]["trials"] = 3
    study_file.write_text(yaml.safe_dump(values))
    result = run_study(load_study_spec(study_file), _options(stores))
    assert len(_load_optuna(stores).get_trials()) == 3
    assert result.counts["complete"] == 3


def test_compare_url_lists_runs():
    url = compare_runs_url("http://127.0.0.1:5000/", "3", ["abc", "def"])
    assert url == "http://127.0.0.1:5000/#/compare-runs?runs=%5B%22abc%22%2C%22def%22%5D&experiments=%5B%223%22%5D"


# ---- journal storage, the UI and the screenshot ----


def test_journal_storage_resumes(stores):
    journal = str(stores.root / "optuna.log")
    study_file = _write_study(stores.root, {"a": {}, "b": {}})
    first = run_study(load_study_spec(study_file), _options(stores, storage=journal))
    second = run_study(load_study_spec(study_file), _options(stores, storage=journal))

    assert first.counts["complete"] == 2
    assert second.counts["complete"] == 2
    assert _count(stores.log, "start", "a") == 1
    assert _count(stores.log, "start", "b") == 1
    assert Path(journal).stat().st_size > 0


def test_ui_serves_store_and_stops(stores):
    from hcae.commands.ui import free_port

    study_file = _write_study(stores.root, {"a": {}})
    result = run_study(load_study_spec(study_file), _options(stores))
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "hcae.cli", "ui", "--port", str(port), "--tracking-uri", stores.tracking_uri, "--study", "fake"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        first_line = process.stdout.readline()
        assert first_line.startswith(f"MLflow UI: http://127.0.0.1:{port}"), process.stderr.read() if process.poll() is not None else first_line
        assert "compare-runs" in process.stdout.readline()
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/get?run_id={result.parent_run_id}", timeout=30) as response:
            run = json.load(response)["run"]
        assert run["info"]["run_name"] == "fake"
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)

    assert process.returncode == 0, stderr[-2000:]
    # the server stopped listening: the port binds again (SO_REUSEADDR ignores closed connections)
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))


def test_screenshot_shows_study_runs(stores):
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("needs the Debian packages chromium and chromium-driver")
    study_file = _write_study(stores.root, {"a": {}, "b": {"model": {"preset": "v1.1"}}})
    run_study(load_study_spec(study_file), _options(stores))
    output = stores.root / "compare.png"

    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "screenshot_ui.py"), "--study", "fake",
         "--tracking-uri", stores.tracking_uri, "--output", str(output)],
        capture_output=True, text=True, timeout=300,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert output.stat().st_size > 20_000


def test_screenshot_unknown_study_exits_2(stores):
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "screenshot_ui.py"), "--study", "nothing", "--tracking-uri", stores.tracking_uri],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "no MLflow runs of study 'nothing'" in result.stderr


# ---- real training at the smoke profile ----


@pytest.mark.slow
def test_real_trainer_nan_and_retry(stores, data_dir, monkeypatch):
    """Smoke-profile training through `run_tracked`: seed 1 gets a NaN loss, seed 0 trains."""
    monkeypatch.setenv("HCAE_DATA_DIR", str(data_dir))
    monkeypatch.setenv(NAN_SEED_ENV, "1")
    study_file = stores.root / "smoke.yaml"
    study_file.write_text(textwrap.dedent("""\
        # Hypothesis: the study runner trains, evaluates and fails real smoke-profile runs.
        # Run: hcae ablate smoke.yaml
        study: smoke
        base: {model: {preset: v1.0}}
        profile: smoke
        grid:
          seeds: [0, 1]
          variants:
            v1.0: {model: {preset: v1.0}, kind: "test_study:nan_loss_trial"}
        """))

    # worker processes: the variable reaches the patch through the environment they inherit
    first = run_study(load_study_spec(study_file), _options(stores, in_process=False))

    assert first.exit_code == 1, first.format_summary()
    store = TrackingStore(stores.tracking_uri)
    trials = {trial.user_attrs["seed"]: trial for trial in optuna.load_study(study_name="smoke", storage=stores.storage).get_trials()}
    trained, diverged = trials[0], trials[1]
    assert trained.state == TrialState.COMPLETE
    assert -1.0 <= trained.value <= 1.0
    assert "test/stsb_spearman" in trained.user_attrs["metrics"]
    trained_run = store.client.get_run(trained.user_attrs["mlflow_run_id"])
    assert trained_run.info.status == "FINISHED"
    assert trained_run.data.tags["mlflow.parentRunId"] == first.parent_run_id
    assert Path(trained_run.data.tags["hcae.run_dir"]).is_dir()
    assert diverged.state == TrialState.FAIL
    assert diverged.user_attrs["error"]
    diverged_run = store.client.get_run(diverged.user_attrs["mlflow_run_id"])
    assert diverged_run.info.status == "FAILED"
    assert diverged_run.data.tags["hcae.error"] == diverged.user_attrs["error"]

    monkeypatch.delenv(NAN_SEED_ENV)
    second = run_study(load_study_spec(study_file), _options(stores, retry_failed=True))

    assert second.exit_code == 0, second.format_summary()
    attempts = optuna.load_study(study_name="smoke", storage=stores.storage).get_trials()
    assert [(trial.user_attrs["seed"], trial.state) for trial in attempts] == [
        (0, TrialState.COMPLETE), (1, TrialState.FAIL), (1, TrialState.COMPLETE)
    ]
    # the trainer reports a NaN loss as TrainingDiverged, not as a failure of the evaluation after it
    assert diverged.user_attrs["error_type"] == "TrainingDiverged", diverged.user_attrs["error"]
