"""Statistics for comparing variants trained with several seeds and scored per test item.

A variant's score is the mean over its seeds of a task metric (STS Benchmark Spearman, SciFact
NDCG@10 or Recall@10). The difference between two variants gets a paired, two-level bootstrap:
each resample draws test items with replacement (the same items for both variants, which pairs
them) and, independently for each variant, seeds with replacement. The 95% interval is the
percentile interval of the resampled differences, and the two-sided p-value is twice the smaller
tail of that distribution beyond zero (Efron and Tibshirani, 1993, "An Introduction to the
Bootstrap", ch. 15-16). Holm's step-down method (Holm, 1979) then corrects the p-values of all
steps of a path for multiple comparisons.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

DEFAULT_RESAMPLES = 5000
DEFAULT_SEED = 0
# resamples are processed in blocks of this many, to bound memory on large item sets
BLOCK = 250


@dataclass(frozen=True)
class VariantItems:
    """Per-item scores of one variant: one row per seed, one column per test item.

    For a mean metric (NDCG@10, Recall@10) a row contains the per-query values. For ``spearman``
    a row contains the model's cosine similarity per pair, and ``gold`` the gold scores.
    """

    values: np.ndarray
    gold: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.values.ndim != 2 or self.values.shape[0] < 1:
            raise ValueError(f"values must be a (seeds, items) array with at least one seed, got shape {self.values.shape}")
        if self.gold is not None and self.gold.shape != (self.values.shape[1],):
            raise ValueError(f"gold has shape {self.gold.shape}, expected ({self.values.shape[1]},)")


@dataclass(frozen=True)
class Comparison:
    """The difference ``b - a`` of two variants' seed-mean scores, with its bootstrap statistics."""

    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    resamples: int


def spearman_rows(predictions: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Return the Spearman correlation of each row of ``predictions`` with ``gold`` (ties get average ranks).

    ``predictions`` is ``(rows, items)`` and ``gold`` is ``(items,)`` or ``(rows, items)``.
    """
    predicted_ranks = rankdata(predictions, axis=-1)
    gold_ranks = rankdata(np.broadcast_to(gold, predictions.shape), axis=-1)
    predicted_ranks = predicted_ranks - predicted_ranks.mean(axis=-1, keepdims=True)
    gold_ranks = gold_ranks - gold_ranks.mean(axis=-1, keepdims=True)
    numerator = (predicted_ranks * gold_ranks).sum(axis=-1)
    denominator = np.sqrt((predicted_ranks**2).sum(axis=-1) * (gold_ranks**2).sum(axis=-1))
    return numerator / np.where(denominator == 0, np.nan, denominator)


def variant_score(items: VariantItems, metric: str) -> float:
    """Return the seed-mean score of a variant on all items: mean per-item value, or Spearman."""
    if metric == "spearman":
        return float(np.mean(spearman_rows(items.values, items.gold)))
    return float(items.values.mean())


def _resampled_scores(items: VariantItems, metric: str, item_draws: np.ndarray, seed_draws: np.ndarray) -> np.ndarray:
    """Return the seed-mean score for each resample: ``item_draws`` is (R, items), ``seed_draws`` (R, seeds)."""
    scores = np.empty(item_draws.shape[0])
    for start in range(0, item_draws.shape[0], BLOCK):
        draws = item_draws[start : start + BLOCK]
        # (seeds, items) -> (R, seeds, items): every seed's values at the drawn items
        values = items.values[:, draws].transpose(1, 0, 2)
        if metric == "spearman":
            per_seed = spearman_rows(values, items.gold[draws][:, None, :])
        else:
            per_seed = values.mean(axis=-1)
        chosen = seed_draws[start : start + BLOCK]
        scores[start : start + BLOCK] = np.take_along_axis(per_seed, chosen, axis=1).mean(axis=1)
    return scores


def paired_bootstrap(
    a: VariantItems,
    b: VariantItems,
    metric: str,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    confidence: float = 0.95,
) -> Comparison:
    """Compare variant ``b`` with variant ``a`` on the same test items.

    Args:
        a, b: per-item scores of the two variants (any number of seeds each).
        metric: ``"spearman"`` (rows are predictions, ``gold`` set) or ``"mean"`` (rows are
            per-item metric values such as NDCG@10).
        resamples: bootstrap resamples.
        seed: seed of the resampling generator.
        confidence: coverage of the percentile interval.

    Returns:
        The observed difference ``score(b) - score(a)``, its percentile interval and a two-sided
        p-value (at least ``1 / (resamples + 1)``).
    """
    if metric not in ("spearman", "mean"):
        raise ValueError(f"unknown metric {metric!r}; use 'spearman' or 'mean'")
    if a.values.shape[1] != b.values.shape[1]:
        raise ValueError(f"the variants were scored on different items: {a.values.shape[1]} vs {b.values.shape[1]}")
    if metric == "spearman" and (a.gold is None or b.gold is None or not np.array_equal(a.gold, b.gold)):
        raise ValueError("a Spearman comparison needs the same gold scores for both variants")

    rng = np.random.default_rng(seed)
    num_items = a.values.shape[1]
    item_draws = rng.integers(0, num_items, size=(resamples, num_items))
    seeds_a = rng.integers(0, a.values.shape[0], size=(resamples, a.values.shape[0]))
    seeds_b = rng.integers(0, b.values.shape[0], size=(resamples, b.values.shape[0]))

    deltas = _resampled_scores(b, metric, item_draws, seeds_b) - _resampled_scores(a, metric, item_draws, seeds_a)
    observed = variant_score(b, metric) - variant_score(a, metric)
    tail = (1 - confidence) / 2
    low, high = np.quantile(deltas, [tail, 1 - tail])
    below = (np.sum(deltas <= 0) + 1) / (resamples + 1)
    above = (np.sum(deltas >= 0) + 1) / (resamples + 1)
    p_value = min(1.0, 2 * min(below, above))
    return Comparison(delta=observed, ci_low=float(low), ci_high=float(high), p_value=float(p_value), resamples=resamples)


def holm_bonferroni(p_values: Sequence[float]) -> list[float]:
    """Return Holm's step-down adjusted p-values, in the input order.

    The i-th smallest p-value is multiplied by (m - i + 1), and the adjusted values are made
    non-decreasing in that order and capped at 1.
    """
    count = len(p_values)
    order = sorted(range(count), key=lambda index: p_values[index])
    adjusted = [0.0] * count
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (count - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def mean_and_std(values: Sequence[float]) -> tuple[float, float]:
    """Return the mean and the sample standard deviation (0 for a single value)."""
    array = np.asarray(values, dtype=float)
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else 0.0
