"""Percentile bootstrap confidence intervals over per-item scores.

Each interval resamples items (STS pairs or retrieval queries) with replacement and recomputes
the metric on every resample. A fixed seed gives the same interval for the same values under the
same NumPy version.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95


def bootstrap_indices(num_items: int, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """Return a (resamples, num_items) matrix of item indices drawn with replacement."""
    if num_items < 2:
        raise ValueError(f"a bootstrap needs at least 2 items, got {num_items}")
    generator = np.random.default_rng(seed)
    return generator.integers(0, num_items, size=(resamples, num_items))


def _percentile_interval(statistics: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(statistics, [tail, 1.0 - tail])
    return float(low), float(high)


def mean_confidence_interval(
    values: Sequence[float] | np.ndarray,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> tuple[float, float]:
    """Return the percentile bootstrap interval of the mean of per-item values (e.g. NDCG@10 per query)."""
    array = np.asarray(values, dtype=np.float64)
    indices = bootstrap_indices(len(array), resamples, seed)
    return _percentile_interval(array[indices].mean(axis=1), confidence)


def row_spearman(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Return the Spearman correlation of each row pair of two (rows, items) matrices.

    Ties get average ranks, as in ``scipy.stats.spearmanr``.
    """
    first_ranks = rankdata(first, axis=1)
    second_ranks = rankdata(second, axis=1)
    first_ranks -= first_ranks.mean(axis=1, keepdims=True)
    second_ranks -= second_ranks.mean(axis=1, keepdims=True)
    covariance = (first_ranks * second_ranks).sum(axis=1)
    scale = np.sqrt((first_ranks**2).sum(axis=1) * (second_ranks**2).sum(axis=1))
    return covariance / scale


def spearman_confidence_interval(
    predictions: Sequence[float] | np.ndarray,
    gold: Sequence[float] | np.ndarray,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> tuple[float, float]:
    """Return the percentile bootstrap interval of the Spearman correlation between paired values."""
    predicted = np.asarray(predictions, dtype=np.float64)
    reference = np.asarray(gold, dtype=np.float64)
    if predicted.shape != reference.shape:
        raise ValueError(f"predictions and gold differ in shape: {predicted.shape} vs {reference.shape}")
    indices = bootstrap_indices(len(predicted), resamples, seed)
    return _percentile_interval(row_spearman(predicted[indices], reference[indices]), confidence)
