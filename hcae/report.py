"""Analysis of a finished study: per-variant scores over seeds, step-by-step differences with
paired-bootstrap intervals and Holm-corrected p-values, controls, the published claims beside the
measurements, and figures. The notebook and ``hcae report`` both build on this module; neither
trains anything, and everything is read back from MLflow.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hcae.stats import VariantItems, holm_bonferroni, mean_and_std, paired_bootstrap
from hcae.tracking import TrackingStore

logger = logging.getLogger(__name__)

# (metric column, label, per-item key, statistic) for the three test scores a study reports
TEST_METRICS = (
    ("test/stsb_spearman", "STSBenchmark Spearman", "STSBenchmark", "spearman"),
    ("test/scifact_ndcg_at_10", "SciFact NDCG@10", "SciFact:ndcg_at_10", "mean"),
    ("test/scifact_recall_at_10", "SciFact Recall@10", "SciFact:recall_at_10", "mean"),
)
DEV_METRICS = (("dev/stsb_spearman", "dev STSBenchmark"), ("dev/scifact_ndcg_at_10", "dev SciFact NDCG@10"))

# the public report's claims about HCAE, test scores
PUBLISHED_CLAIMS: dict[str, dict[str, float]] = {
    "v1.0": {"test/stsb_spearman": 0.591, "test/scifact_recall_at_10": 0.393},
    "v1.1": {"test/stsb_spearman": 0.656, "test/scifact_ndcg_at_10": 0.413, "test/scifact_recall_at_10": 0.523},
}

# published scores of reference models (STSBenchmark Spearman, SciFact NDCG@10, SciFact Recall@10);
# None where the source gives no value
REFERENCE_SCORES: dict[str, tuple[float | None, float | None, float | None]] = {
    "all-MiniLM-L6-v2 (MTEB leaderboard)": (0.8203, 0.6451, 0.7833),
    "static-retrieval-mrl-en-v1": (0.740, 0.594, None),
    "potion-base-8M": (0.754, 0.506, None),
    "GloVe average": (0.615, 0.296, None),
}


@dataclass(frozen=True)
class ReportPlan:
    """The comparisons of a report.

    Attributes:
        path: variant names in the order of the path; each step compares a variant with the one before.
        step_labels: a label per path variant for tables and figures (defaults to the name).
        controls: control variant -> the variant it is compared with.
        claims: variant -> published test scores to set beside the measured ones.
        speed_models: variant -> model name in the encode benchmark, for the speed figure.
    """

    path: tuple[str, ...] = ()
    step_labels: dict[str, str] = field(default_factory=dict)
    controls: dict[str, str] = field(default_factory=dict)
    claims: dict[str, dict[str, float]] = field(default_factory=dict)
    speed_models: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> ReportPlan:
        """Build a plan from a study file's ``report`` section."""
        values = values or {}
        labels = dict(values.get("step_labels") or {})
        claims = {variant: PUBLISHED_CLAIMS[key] for variant, key in (values.get("claims") or {}).items()}
        return cls(
            path=tuple(values.get("path") or ()),
            step_labels=labels,
            controls=dict(values.get("controls") or {}),
            claims=claims,
            speed_models=dict(values.get("speed_models") or {}),
        )

    def label(self, variant: str) -> str:
        return self.step_labels.get(variant, variant)


class StudyAnalysis:
    """A study's complete trials, read from MLflow, with their per-item test scores.

    Args:
        runs: the output of `hcae.study.load_study_runs`.
        store: the MLflow store the runs live in (to download per-item files and histories).
        cache_dir: where downloaded artifacts are kept.
    """

    def __init__(self, runs: pd.DataFrame, store: TrackingStore, cache_dir: Path) -> None:
        if runs.empty:
            raise LookupError("the study has no runs in this MLflow store")
        complete = runs[runs["trial_state"] == "COMPLETE"].copy()
        if complete.empty:
            raise LookupError("the study has no complete trials yet")
        self.runs = complete.reset_index(drop=True)
        self.store = store
        self.cache_dir = cache_dir
        self._items: dict[str, dict[str, Any]] = {}

    @classmethod
    def load(cls, study_name: str, tracking_uri: str | None = None, cache_dir: str | Path | None = None) -> StudyAnalysis:
        """Read a study's runs from MLflow (the default store unless ``tracking_uri`` is given)."""
        from hcae.study import load_study_runs

        store = TrackingStore(tracking_uri)
        runs = load_study_runs(study_name, store.tracking_uri)
        folder = Path(cache_dir) if cache_dir else Path(".cache") / "hcae" / "reports" / study_name
        return cls(runs, store, folder)

    @property
    def variants(self) -> list[str]:
        """Variant names in the order their first trial ran."""
        return list(dict.fromkeys(self.runs["variant"]))

    def column(self, metric: str) -> str:
        return f"metrics.{metric}"

    # ---- per-item scores ----

    def run_items(self, run_id: str) -> dict[str, Any]:
        """Return the per-item test values of one run, downloading its results file once."""
        if run_id not in self._items:
            target = self.cache_dir / run_id
            path = target / "results.json"
            if not path.is_file():
                target.mkdir(parents=True, exist_ok=True)
                downloaded = self.store.client.download_artifacts(run_id, "eval/results.json", str(target))
                Path(downloaded).replace(path)
            results = json.loads(path.read_text())
            items: dict[str, Any] = {}
            sts = results["tasks"].get("STSBenchmark", {}).get("splits", {}).get("test")
            if sts:
                items["STSBenchmark"] = (np.asarray(sts["per_item"]["cosine"]), np.asarray(sts["per_item"]["gold"]))
            scifact = results["tasks"].get("SciFact", {}).get("splits", {}).get("test")
            if scifact:
                order = np.argsort(scifact["per_item"]["query_ids"])
                for key in ("ndcg_at_10", "recall_at_10"):
                    items[f"SciFact:{key}"] = np.asarray(scifact["per_item"][key])[order]
            self._items[run_id] = items
        return self._items[run_id]

    def variant_items(self, variant: str, item_key: str) -> VariantItems:
        """Stack a variant's per-item values over its seeds."""
        run_ids = self.runs.loc[self.runs["variant"] == variant, "run_id"]
        if run_ids.empty:
            raise KeyError(f"variant {variant!r} has no complete trial; variants: {self.variants}")
        rows, gold = [], None
        for run_id in run_ids:
            value = self.run_items(run_id)[item_key]
            if isinstance(value, tuple):
                value, gold = value
            rows.append(value)
        return VariantItems(np.vstack(rows), gold)

    # ---- tables ----

    def summary(self) -> pd.DataFrame:
        """Return mean and standard deviation over seeds of the dev and test scores, per variant."""
        rows = []
        for variant in self.variants:
            subset = self.runs[self.runs["variant"] == variant]
            row: dict[str, Any] = {"variant": variant, "seeds": len(subset)}
            for metric, label in [(metric, label) for metric, label, _, _ in TEST_METRICS] + list(DEV_METRICS):
                column = self.column(metric)
                if column in subset:
                    values = subset[column].dropna().tolist()
                    if values:
                        row[f"{label} mean"], row[f"{label} std"] = mean_and_std(values)
            for metric in ("eval/scifact_texts_per_second", "time/total_seconds", "params/total"):
                column = self.column(metric)
                if column in subset:
                    row[metric] = float(subset[column].mean())
            rows.append(row)
        return pd.DataFrame(rows)

    def compare(self, pairs: list[tuple[str, str, str]], resamples: int = 5000) -> pd.DataFrame:
        """Compare variant pairs on every test metric; Holm-correct each metric over the pairs.

        Args:
            pairs: (label, baseline variant, compared variant) triples.
            resamples: bootstrap resamples per comparison.

        Returns:
            One row per pair and metric: ``delta`` (compared minus baseline, seed means),
            ``ci_low``, ``ci_high``, ``p_value`` and ``p_holm``.
        """
        rows = []
        for metric, label, item_key, statistic in TEST_METRICS:
            results = []
            for step, baseline, compared in pairs:
                try:
                    comparison = paired_bootstrap(
                        self.variant_items(baseline, item_key), self.variant_items(compared, item_key),
                        statistic, resamples=resamples,
                    )
                except KeyError as error:
                    logger.warning("skipping %s on %s: %s", step, label, error)
                    continue
                results.append((step, baseline, compared, comparison))
            adjusted = holm_bonferroni([comparison.p_value for *_, comparison in results])
            for (step, baseline, compared, comparison), p_holm in zip(results, adjusted):
                rows.append({
                    "step": step, "baseline": baseline, "variant": compared, "metric": label,
                    "delta": comparison.delta, "ci_low": comparison.ci_low, "ci_high": comparison.ci_high,
                    "p_value": comparison.p_value, "p_holm": p_holm,
                })
        return pd.DataFrame(rows)

    def path_steps(self, plan: ReportPlan, resamples: int = 5000) -> pd.DataFrame:
        """Compare each variant of the path with the one before it."""
        pairs = [(plan.label(after), before, after) for before, after in zip(plan.path, plan.path[1:])]
        return self.compare(pairs, resamples)

    def controls(self, plan: ReportPlan, resamples: int = 5000) -> pd.DataFrame:
        """Compare each control with its reference variant (control minus reference)."""
        pairs = [(f"{control} vs {reference}", reference, control) for control, reference in plan.controls.items()]
        return self.compare(pairs, resamples)

    def claims(self, plan: ReportPlan) -> pd.DataFrame:
        """Set the published scores beside this study's seed means and intervals."""
        summary = self.summary().set_index("variant")
        rows = []
        for variant, claimed in plan.claims.items():
            for metric, label, _, _ in TEST_METRICS:
                if metric not in claimed:
                    continue
                measured = summary.loc[variant, f"{label} mean"] if variant in summary.index else math.nan
                spread = summary.loc[variant, f"{label} std"] if variant in summary.index else math.nan
                rows.append({"variant": variant, "metric": label, "claimed": claimed[metric], "measured mean": measured, "seed std": spread})
        return pd.DataFrame(rows)

    def history(self, metric: str) -> pd.DataFrame:
        """Return every run's history of one metric: columns run_id, variant, seed, step, value."""
        frames = []
        for _, run in self.runs.iterrows():
            points = self.store.client.get_metric_history(run["run_id"], metric)
            frames.append(pd.DataFrame({
                "run_id": run["run_id"], "variant": run["variant"], "seed": run["seed"],
                "step": [point.step for point in points], "value": [point.value for point in points],
            }))
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def reference_table() -> pd.DataFrame:
    """Return the published reference scores as a table."""
    rows = []
    for name, (sts, ndcg, recall) in REFERENCE_SCORES.items():
        rows.append({"model": name, "STSBenchmark Spearman": sts, "SciFact NDCG@10": ndcg, "SciFact Recall@10": recall})
    return pd.DataFrame(rows)


# ---- the Markdown report ----


def _markdown_table(table: pd.DataFrame, digits: int = 3) -> str:
    if table.empty:
        return "_(no rows)_\n"
    formatted = table.copy()
    for column in formatted.columns:
        if pd.api.types.is_float_dtype(formatted[column]):
            formatted[column] = formatted[column].map(lambda value: "" if pd.isna(value) else f"{value:.{digits}f}")
    header = "| " + " | ".join(str(column) for column in formatted.columns) + " |"
    rule = "|" + "|".join("---" for _ in formatted.columns) + "|"
    body = ["| " + " | ".join(str(value) for value in row) + " |" for row in formatted.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def _published_digits(value: float | None) -> str:
    """Format a published score with three decimals, or four where the source gives four (0.740, 0.8203)."""
    if value is None or pd.isna(value):
        return ""
    text = f"{value:.4f}"
    return text[:-1] if text.endswith("0") else text


def _difference_table(differences: pd.DataFrame) -> pd.DataFrame:
    if differences.empty:
        return differences
    table = differences[["step", "metric", "delta", "ci_low", "ci_high", "p_value", "p_holm"]].copy()
    table["p_value"] = table["p_value"].map(lambda value: f"{value:.4f}")
    table["p_holm"] = table["p_holm"].map(lambda value: f"{value:.4f}")
    return table


def verdict(row: pd.Series, significance: float = 0.05) -> str:
    """Classify a difference against the claim that the change helps."""
    if row["p_holm"] < significance and row["delta"] > 0:
        return "reproduced: a significant gain"
    if row["p_holm"] < significance and row["delta"] < 0:
        return "contradicted: a significant loss"
    return "not shown: no significant difference"


def _verdict_table(steps: pd.DataFrame) -> pd.DataFrame:
    table = steps[["step", "metric", "delta", "ci_low", "ci_high", "p_holm"]].copy()
    table["verdict"] = steps.apply(verdict, axis=1)
    table["p_holm"] = table["p_holm"].map(lambda value: f"{value:.4f}")
    return table


def write_report(
    analysis: StudyAnalysis,
    plan: ReportPlan,
    out: str | Path,
    title: str,
    speed: dict[str, float] | None = None,
    resamples: int = 5000,
    notes: str | None = None,
) -> Path:
    """Write a study's tables and figures as Markdown plus PNG files.

    Args:
        analysis: the study's runs.
        plan: what to compare.
        out: a folder (the page is ``README.md`` in it, beside the figures), or a ``.md`` path
            (the figures go to the folder of the same name without the suffix).
        title: the page title.
        speed: variant -> encode throughput relative to all-MiniLM-L6-v2, for the speed figure.
        resamples: bootstrap resamples per comparison.
        notes: Markdown placed after the title, for a discussion written by hand.

    Returns:
        The path of the Markdown file.
    """
    from hcae import figures

    out = Path(out)
    if out.suffix == ".md":
        page, figure_dir = out, out.with_suffix("")
        prefix = f"{figure_dir.name}/"
    else:
        page, figure_dir, prefix = out / "README.md", out, ""
    figure_dir.mkdir(parents=True, exist_ok=True)
    variants = [variant for variant in plan.path if variant in analysis.variants]
    variants += [variant for variant in analysis.variants if variant not in variants]

    summary = analysis.summary()
    steps = analysis.path_steps(plan, resamples) if len(plan.path) > 1 else pd.DataFrame()
    controls = analysis.controls(plan, resamples) if plan.controls else pd.DataFrame()

    images = {}
    if not steps.empty:
        images["steps"] = figures.plot_differences(steps, "Each step of the path: change in test score")
    if not controls.empty:
        images["controls"] = figures.plot_differences(controls, "Controls against their reference")
    images["seeds"] = figures.plot_seed_points(analysis, plan, variants)
    images["curves"] = figures.plot_training_curves(analysis, variants)
    images["speed"] = figures.plot_quality_vs_speed(summary, speed)
    for name, figure in images.items():
        figure.savefig(figure_dir / f"{name}.png", dpi=110)
        figures.plt.close(figure)

    def image(name: str) -> str:
        return f"![{name}]({prefix}{name}.png)"

    lines = [f"# {title}", ""]
    if notes:
        lines += [notes.strip(), ""]
    if not steps.empty:
        lines += [
            "## Verdict per step",
            "",
            "Each step is compared with the one before it on the test sets; a claim counts as "
            "reproduced only when the Holm-corrected p-value is below 0.05 and the change is a gain.",
            "",
            _markdown_table(_verdict_table(steps), 4),
        ]
    summary_table = summary.rename(columns={
        "eval/scifact_texts_per_second": "SciFact encode texts/s",
        "time/total_seconds": "trial minutes",
        "params/total": "parameters (M)",
    })
    for column, scale in (("trial minutes", 60.0), ("parameters (M)", 1e6)):
        if column in summary_table:
            summary_table[column] = summary_table[column] / scale
    lines += ["## Scores per variant (mean and standard deviation over seeds)", "", _markdown_table(summary_table), ""]
    if not steps.empty:
        lines += [
            "## Step by step",
            "",
            "Difference of each step to the previous one (seed means), with a 95% paired-bootstrap "
            f"interval over test items and seeds ({resamples} resamples), the two-sided bootstrap "
            "p-value and the Holm-Bonferroni corrected p-value over the steps of each metric.",
            "",
            _markdown_table(_difference_table(steps), 4),
            image("steps"),
            "",
        ]
    if not controls.empty:
        lines += [
            "## Controls",
            "",
            "Each control minus its reference variant; Holm-corrected over the controls of each metric.",
            "",
            _markdown_table(_difference_table(controls), 4),
            image("controls"),
            "",
        ]
    if plan.claims:
        lines += ["## Published claims beside this study", "", _markdown_table(analysis.claims(plan)), ""]
    # published values keep the digits their sources give
    references = reference_table()
    for column in references.columns[1:]:
        references[column] = references[column].map(_published_digits)
    lines += ["## Published reference scores", "", _markdown_table(references), ""]
    lines += ["## Figures", "", image("seeds"), "", image("curves"), "", image("speed"), ""]

    page.write_text("\n".join(lines))
    return page


# ---- inputs of the notebook and `hcae report` ----


def load_report_plan(study_file: str | Path) -> tuple[str, ReportPlan]:
    """Return a study file's study name and the plan of its ``report`` section."""
    from hcae.study import load_study_spec

    spec = load_study_spec(study_file)
    return spec.name, ReportPlan.from_dict(spec.report)


def default_tracking_uri_for(study_file: str | Path) -> str:
    """Return ``$MLFLOW_TRACKING_URI``, else the SQLite store in ``mlruns/`` beside the study's ``ablations/`` folder."""
    import os

    configured = os.environ.get("MLFLOW_TRACKING_URI")
    if configured:
        return configured
    repository = Path(study_file).resolve().parent.parent
    return f"sqlite:///{repository / 'mlruns' / 'mlflow.db'}"


def load_speed_ratios(
    path: str | Path | None, plan: ReportPlan, dataset: str = "scifact", precision: str = "float32"
) -> dict[str, float] | None:
    """Read encode throughput relative to all-MiniLM-L6-v2 per study variant from the encode benchmark.

    The report section's ``speed_models`` maps variants to benchmark model names. Returns None if
    the file does not exist.
    """
    if path is None or not Path(path).is_file():
        return None
    benchmark = json.loads(Path(path).read_text())
    ratios = {
        result["model"]: result["ratio_to_reference"]
        for result in benchmark["results"]
        if result["dataset"] == dataset and result["precision"] == precision
    }
    return {variant: ratios[model] for variant, model in plan.speed_models.items() if model in ratios}
