"""Figures of a study report, drawn with matplotlib; each function returns its `Figure`."""

from __future__ import annotations

# No backend is forced here: a Jupyter kernel shows the figures inline, and a headless command
# falls back to Agg on its own.
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from hcae.report import TEST_METRICS, ReportPlan, StudyAnalysis

SIGNIFICANCE = 0.05


def plot_differences(differences: pd.DataFrame, title: str) -> Figure:
    """Draw each comparison's difference with its 95% interval, one panel per metric.

    Filled markers are significant after Holm's correction (p < 0.05), hollow ones are not.
    """
    metrics = list(dict.fromkeys(differences["metric"]))
    figure, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 0.6 * differences["step"].nunique() + 1.8), squeeze=False)
    for axis, metric in zip(axes[0], metrics):
        rows = differences[differences["metric"] == metric].reset_index(drop=True)
        positions = np.arange(len(rows))[::-1]
        for position, (_, row) in zip(positions, rows.iterrows()):
            significant = row["p_holm"] < SIGNIFICANCE
            axis.errorbar(
                row["delta"], position,
                xerr=[[row["delta"] - row["ci_low"]], [row["ci_high"] - row["delta"]]],
                fmt="o", color="C0" if row["delta"] >= 0 else "C3", capsize=3,
                markerfacecolor=None if significant else "white",
            )
        axis.axvline(0.0, color="grey", linewidth=0.8)
        axis.set_yticks(positions)
        axis.set_yticklabels(rows["step"])
        axis.set_title(metric)
        axis.set_xlabel("difference (95% CI)")
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def plot_seed_points(analysis: StudyAnalysis, plan: ReportPlan, variants: list[str]) -> Figure:
    """Draw every seed's test score per variant, the seed mean as a bar and published claims as stars."""
    figure, axes = plt.subplots(1, len(TEST_METRICS), figsize=(4.6 * len(TEST_METRICS), 4.2), squeeze=False)
    for axis, (metric, label, _, _) in zip(axes[0], TEST_METRICS):
        column = analysis.column(metric)
        for position, variant in enumerate(variants):
            values = analysis.runs.loc[analysis.runs["variant"] == variant, column].dropna()
            if values.empty:
                continue
            axis.bar(position, values.mean(), color="C0", alpha=0.25, width=0.7)
            jitter = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else [0.0]
            axis.scatter(position + np.asarray(jitter), values, color="C0", s=18, zorder=3)
            claimed = plan.claims.get(variant, {}).get(metric)
            if claimed is not None:
                axis.scatter([position], [claimed], marker="*", color="C3", s=120, zorder=4, label="published claim")
        axis.set_xticks(range(len(variants)))
        axis.set_xticklabels([plan.label(variant) for variant in variants], rotation=40, ha="right")
        axis.set_title(label)
        handles, names = axis.get_legend_handles_labels()
        if handles:
            axis.legend(handles[:1], names[:1], loc="lower right", fontsize=8)
    figure.suptitle("Test scores per seed (dots), seed means (bars)")
    figure.tight_layout()
    return figure


def plot_training_curves(analysis: StudyAnalysis, variants: list[str]) -> Figure:
    """Draw the training loss and the dev STS Benchmark Spearman during training, per variant."""
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for axis, metric, title in (
        (axes[0], "train/loss", "training loss"),
        (axes[1], "dev/stsb_spearman_during_training", "dev STSBenchmark Spearman during training"),
    ):
        history = analysis.history(metric)
        if history.empty:
            axis.set_title(f"{title} (not logged)")
            continue
        for index, variant in enumerate(variants):
            subset = history[history["variant"] == variant]
            if subset.empty:
                continue
            for _, seed_rows in subset.groupby("seed"):
                axis.plot(seed_rows["step"], seed_rows["value"], color=f"C{index}", alpha=0.3, linewidth=0.8)
            mean = subset.groupby("step")["value"].mean()
            axis.plot(mean.index, mean.values, color=f"C{index}", linewidth=1.8, label=variant)
        axis.set_xlabel("step (distillation, then contrastive)")
        axis.set_title(title)
    axes[1].legend(fontsize=8)
    figure.tight_layout()
    return figure


def plot_quality_vs_speed(summary: pd.DataFrame, speed: dict[str, float] | None = None) -> Figure:
    """Draw test quality against encode speed.

    Args:
        summary: `StudyAnalysis.summary` output.
        speed: variant -> encode throughput relative to all-MiniLM-L6-v2, from the encode
            benchmark. Without it, the SciFact texts per second measured during evaluation is used.
    """
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    if speed:
        xs = summary["variant"].map(speed)
        xlabel = "encode throughput relative to all-MiniLM-L6-v2 (benchmark)"
    else:
        xs = summary.get("eval/scifact_texts_per_second", pd.Series(np.nan, index=summary.index))
        xlabel = "SciFact texts per second during evaluation"
    for axis, label in zip(axes, ("STSBenchmark Spearman", "SciFact NDCG@10")):
        column = f"{label} mean"
        if column not in summary:
            continue
        for x, y, name in zip(xs, summary[column], summary["variant"]):
            if pd.isna(x) or pd.isna(y):
                continue
            axis.scatter([x], [y], s=30)
            axis.annotate(name, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=8)
        axis.set_xlabel(xlabel)
        axis.set_ylabel(f"test {label}")
    figure.suptitle("Quality against encode speed (up and right is better)")
    figure.tight_layout()
    return figure
