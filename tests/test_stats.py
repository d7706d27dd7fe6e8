"""Statistics on cases whose results are known in advance."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from hcae.stats import VariantItems, holm_bonferroni, mean_and_std, paired_bootstrap, spearman_rows, variant_score


def test_spearman_rows_matches_scipy():
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 6, size=200).astype(float)  # many ties, as in STS gold scores
    predictions = rng.normal(size=(3, 200)) + gold
    for row in range(3):
        assert spearman_rows(predictions[row], gold) == pytest.approx(spearmanr(predictions[row], gold).statistic)


def test_holm_known_case():
    # hand computation: sorted 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> raised to 0.06
    assert holm_bonferroni([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one():
    assert holm_bonferroni([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    assert holm_bonferroni([]) == []


def test_mean_and_std():
    assert mean_and_std([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))
    assert mean_and_std([0.5]) == (0.5, 0.0)


def test_identical_variants_no_difference():
    rng = np.random.default_rng(1)
    values = rng.uniform(size=(3, 300))
    result = paired_bootstrap(VariantItems(values), VariantItems(values.copy()), "mean", resamples=2000)
    assert result.delta == 0.0
    assert result.ci_low <= 0.0 <= result.ci_high
    assert result.p_value > 0.5


def test_constant_shift_recovered():
    rng = np.random.default_rng(2)
    # two seeds with equal scores, so the only difference left is the shift of every item
    base = np.tile(rng.uniform(0, 0.8, size=400), (2, 1))
    shifted = base + 0.1
    result = paired_bootstrap(VariantItems(base), VariantItems(shifted), "mean", resamples=2000)
    assert result.delta == pytest.approx(0.1)
    # a shift shared by every item has no sampling variance once the items are paired
    assert result.ci_low == pytest.approx(0.1)
    assert result.ci_high == pytest.approx(0.1)
    assert result.p_value == pytest.approx(1 / 2001 * 2, rel=1e-6)


def test_pairing_narrows_interval():
    """Items differ a lot among themselves but the two variants differ little per item:
    the paired interval must be much narrower than the spread of the item scores."""
    rng = np.random.default_rng(3)
    item_level = rng.uniform(0, 1, size=500)
    a = item_level + rng.normal(0, 0.01, size=(3, 500))
    b = item_level + 0.02 + rng.normal(0, 0.01, size=(3, 500))
    result = paired_bootstrap(VariantItems(a), VariantItems(b), "mean", resamples=2000)
    assert result.ci_high - result.ci_low < 0.01
    assert result.ci_low > 0
    assert result.p_value < 0.01


def test_spearman_difference_detected():
    rng = np.random.default_rng(4)
    gold = rng.uniform(0, 5, size=600)
    noisy = gold + rng.normal(0, 3.0, size=(3, 600))
    better = gold + rng.normal(0, 1.0, size=(3, 600))
    a, b = VariantItems(noisy, gold), VariantItems(better, gold)
    result = paired_bootstrap(a, b, "spearman", resamples=1000)
    assert result.delta == pytest.approx(variant_score(b, "spearman") - variant_score(a, "spearman"))
    assert result.delta > 0.2
    assert result.ci_low > 0
    assert result.p_value < 0.01


def test_seed_noise_widens_interval():
    """With large seed-to-seed differences, resampling seeds must widen the interval."""
    rng = np.random.default_rng(5)
    item_level = rng.uniform(0, 1, size=300)
    calm = item_level + np.array([[0.0], [0.001], [-0.001]])
    noisy = item_level + np.array([[0.0], [0.1], [-0.1]])
    narrow = paired_bootstrap(VariantItems(calm), VariantItems(calm + 0.01), "mean", resamples=1000)
    wide = paired_bootstrap(VariantItems(calm), VariantItems(noisy + 0.01), "mean", resamples=1000)
    assert (wide.ci_high - wide.ci_low) > 10 * (narrow.ci_high - narrow.ci_low)


def test_mismatched_items_rejected():
    with pytest.raises(ValueError, match="different items"):
        paired_bootstrap(VariantItems(np.zeros((1, 5))), VariantItems(np.zeros((1, 6))), "mean")
    with pytest.raises(ValueError, match="unknown metric"):
        paired_bootstrap(VariantItems(np.zeros((1, 5))), VariantItems(np.zeros((1, 5))), "median")
