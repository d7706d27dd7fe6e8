"""Study reports on a real smoke study: the analysis, `hcae report` and the notebook, executed headless.

One small study is trained once per session on the real data: three path variants and a static
control, two seeds each, at the smoke profile. Every test reads it back from MLflow.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hcae.report import ReportPlan, StudyAnalysis, load_report_plan

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO_ROOT / "notebooks" / "01_reproduce_v1_0_to_v1_1.ipynb"

STUDY = textwrap.dedent("""\
    # Hypothesis: a smoke-sized copy of the one-factor study, for testing the report.
    # Run: hcae ablate ablations/report_smoke.yaml
    study: report_smoke
    base: {profile: smoke, model: {preset: v1.0}}
    profile: smoke
    grid:
      seeds: [0, 1]
      variants:
        v1.0: {model: {preset: v1.0}}
        split_4_4: {model: {preset: v1.0, mixer_types: 4 conv + 4 attn}}
        v1.1: {model: {preset: v1.1}}
        static: {architecture: static}
    report:
      path: [v1.0, split_4_4, v1.1]
      step_labels: {split_4_4: "+ 4/4 split", v1.1: "+ the rest"}
      controls: {static: v1.1}
      claims: {v1.0: v1.0, v1.1: v1.1}
    """)


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory, data_dir):
    """Run the smoke study once; return its file and MLflow tracking URI."""
    root = tmp_path_factory.mktemp("report-study")
    study_file = root / "ablations" / "report_smoke.yaml"
    study_file.parent.mkdir()
    study_file.write_text(STUDY)
    tracking_uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    (root / "mlruns").mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "hcae.cli", "ablate", str(study_file), "--data-dir", str(data_dir),
         "--tracking-uri", tracking_uri, "--storage", f"sqlite:///{root / 'mlruns' / 'optuna.db'}",
         "--output-dir", str(root / "runs"), "--workers", "2"],
        capture_output=True, text=True, cwd=root, timeout=1800,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return study_file, tracking_uri


@pytest.mark.slow
def test_analysis_tables(smoke_study, tmp_path):
    study_file, tracking_uri = smoke_study
    name, plan = load_report_plan(study_file)
    assert name == "report_smoke"
    analysis = StudyAnalysis.load(name, tracking_uri, cache_dir=tmp_path)

    summary = analysis.summary().set_index("variant")
    assert list(summary["seeds"]) == [2, 2, 2, 2]
    assert set(summary.index) == {"v1.0", "split_4_4", "v1.1", "static"}
    assert (summary["STSBenchmark Spearman std"] >= 0).all()

    steps = analysis.path_steps(plan, resamples=200)
    assert set(steps["step"]) == {"+ 4/4 split", "+ the rest"}
    assert len(steps) == 2 * 3
    assert (steps["ci_low"] <= steps["delta"]).all()
    assert (steps["delta"] <= steps["ci_high"]).all()
    assert (steps["p_holm"] >= steps["p_value"]).all()

    # the step's delta is the difference of the two variants' seed means in the summary
    split = steps[(steps["step"] == "+ 4/4 split") & (steps["metric"] == "SciFact NDCG@10")].iloc[0]
    expected = summary.loc["split_4_4", "SciFact NDCG@10 mean"] - summary.loc["v1.0", "SciFact NDCG@10 mean"]
    assert split["delta"] == pytest.approx(expected, abs=1e-4)

    claims = analysis.claims(plan)
    assert set(claims["claimed"]) >= {0.591, 0.656, 0.413, 0.523}


@pytest.mark.slow
def test_report_command_writes_files(smoke_study, tmp_path):
    study_file, tracking_uri = smoke_study
    out = tmp_path / "report"
    result = subprocess.run(
        [sys.executable, "-m", "hcae.cli", "report", str(study_file), "--out", str(out),
         "--tracking-uri", tracking_uri, "--resamples", "200"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    markdown = (out / "README.md").read_text()
    assert "## Verdict per step" in markdown
    assert "## Step by step" in markdown
    assert "+ 4/4 split" in markdown
    assert "0.8203" in markdown  # the published all-MiniLM-L6-v2 score beside the study
    for name in ("steps", "controls", "seeds", "curves", "speed"):
        assert (out / f"{name}.png").stat().st_size > 10_000, name


@pytest.mark.slow
def test_notebook_runs_headless(smoke_study, tmp_path):
    import papermill

    study_file, tracking_uri = smoke_study
    output = tmp_path / "executed.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOK), str(output),
        parameters={"study_file": str(study_file), "tracking_uri": tracking_uri, "speed_file": "", "resamples": 200},
        cwd=str(NOTEBOOK.parent), kernel_name="python3", progress_bar=False,
    )
    executed = json.loads(output.read_text())
    outputs = [item for cell in executed["cells"] if cell["cell_type"] == "code" for item in cell.get("outputs", [])]
    assert not [item for item in outputs if item.get("output_type") == "error"]
    images = [item for item in outputs if "image/png" in item.get("data", {})]
    assert len(images) >= 4


def test_report_rejects_unfinished_study(tmp_path):
    study_file = tmp_path / "ablations" / "empty.yaml"
    study_file.parent.mkdir()
    study_file.write_text(STUDY.replace("study: report_smoke", "study: never_run"))
    result = subprocess.run(
        [sys.executable, "-m", "hcae.cli", "report", str(study_file), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2
    assert "cannot report study 'never_run'" in result.stderr
    assert "hcae ablate" in result.stderr


def test_report_plan_from_study_section():
    plan = ReportPlan.from_dict({"path": ["a", "b"], "controls": {"c": "b"}, "claims": {"b": "v1.1"}})
    assert plan.path == ("a", "b")
    assert plan.claims["b"]["test/stsb_spearman"] == 0.656
    assert plan.label("a") == "a"
