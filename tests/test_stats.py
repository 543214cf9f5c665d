"""The report's statistics: intervals, clipped bands, Holm's correction and paired tests, against values
worked out by hand and against scipy.stats."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from metacompare.report.stats import across_rows, aligned, band, holm, paired_test, pairwise, pool_seeds

NAN = float("nan")


def test_holm_multiplies_the_ith_smallest_p_by_m_minus_i_plus_1_and_keeps_order():
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> kept at 0.06 (monotone)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])  # capped at 1
    adjusted = holm([0.02, NAN, 0.04])  # NaN is no test: m = 2
    assert adjusted[[0, 2]] == pytest.approx([0.04, 0.04]) and math.isnan(adjusted[1])
    assert holm([]).size == 0


def test_paired_test_matches_hand_computation_and_scipy():
    a, b = np.array([3.0, 5.0, 7.0, 9.0]), np.array([1.0, 2.0, 3.0, 4.0])
    result = paired_test(a, b)
    # d = 2, 3, 4, 5: mean 3.5, sd sqrt(5/3) = 1.2910, se 0.6455; t(0.975, 3 df) = 3.1824 -> CI 2.0542
    assert result["n"] == 4 and result["difference"] == pytest.approx(3.5)
    assert result["difference_ci95"] == pytest.approx(3.182446 * math.sqrt(5 / 3) / 2, rel=1e-6)
    t = 3.5 / (math.sqrt(5 / 3) / 2)  # 5.422
    assert result["t_p"] == pytest.approx(2 * scipy_stats.t.sf(t, 3)) == scipy_stats.ttest_rel(a, b).pvalue
    # all four differences positive: W- = 0, exact two-sided p = 2 x 1/2^4 = 0.125
    assert result["wilcoxon_p"] == pytest.approx(0.125)


def test_paired_test_of_equal_scores_and_of_one_pair():
    same = paired_test(np.array([1.0, 2.0]), np.array([1.0, 2.0]))
    assert (same["difference"], same["t_p"], same["wilcoxon_p"]) == (0.0, 1.0, 1.0)
    one = paired_test(np.array([1.0]), np.array([0.0]))
    assert one["n"] == 1 and one["difference"] == 1.0
    assert all(math.isnan(one[k]) for k in ("difference_ci95", "t_p", "wilcoxon_p"))  # undefined, not zero


def test_interval_of_one_value_is_undefined():
    mean, ci = pool_seeds([0.5, 0.7], [9.0, 9.0])
    assert mean == pytest.approx(0.6) and ci == pytest.approx(12.7062047 * 0.1, rel=1e-6)
    assert pool_seeds([0.5], [0.02]) == (0.5, 0.02)  # one seed: the run's own CI over episodes
    values, cis = across_rows(np.array([[1.0, 2.0]]))
    assert list(values) == [1.0, 2.0] and np.isnan(cis).all()
    mean, ci = across_rows(np.array([[1.0, 2.0], [3.0, 2.0]]))
    assert list(mean) == [2.0, 2.0] and ci == pytest.approx([12.7062047, 0.0], rel=1e-6)


def test_band_is_clipped_to_the_score_range_and_absent_for_an_undefined_ci():
    low, high = band(pd.Series([98.0, 2.0, 50.0]), pd.Series([5.0, 5.0, NAN]), 100.0)
    assert list(low) == [93.0, 0.0, 50.0] and list(high) == [100.0, 7.0, 50.0]
    low, high = band(pd.Series([0.3]), pd.Series([0.5]), math.inf)  # an MSE band never goes below 0
    assert list(low) == [0.0] and list(high) == [0.8]


def scores_frame(table: dict[str, list[list[float]]]) -> pd.DataFrame:
    """{algorithm: [[score per episode] per seed]} -> rows (algorithm, seed, episode, score)."""
    return pd.DataFrame([{"algorithm": a, "seed": s, "episode": e, "score": v}
                         for a, seeds in table.items() for s, row in enumerate(seeds) for e, v in enumerate(row)])


def test_pairwise_over_episodes_pairs_same_seed_and_episode_and_corrects_with_holm():
    frame = scores_frame({"maml": [[100, 80, 100, 80], [100, 100, 80, 100]],
                          "reptile": [[60, 40, 60, 40], [60, 60, 40, 60]],
                          "fomaml": [[100, 80, 100, 60], [100, 100, 60, 100]]})
    table = pairwise(frame, "episode").set_index(["a", "b"])
    mr = table.loc[("maml", "reptile")]
    assert mr["n"] == 8 and mr["difference"] == 40.0 and mr["mean_a"] == 92.5 and mr["mean_b"] == 52.5
    # every difference is exactly 40: t is undefined, p is the exact sign test's 2 / 2^8
    assert mr["t_p"] == 2 / 2**8 and mr["verdict"] == "maml beats reptile"
    mf = table.loc[("maml", "fomaml")]
    # differences 0,0,0,20,0,0,20,0: mean 5, sd sqrt((2*15^2 + 6*5^2)/7) = 9.258
    assert mf["difference"] == 5.0
    assert mf["difference_ci95"] == pytest.approx(scipy_stats.t.ppf(0.975, 7) * math.sqrt(600 / 7) / math.sqrt(8))
    maml = frame[frame["algorithm"] == "maml"]["score"].to_numpy()
    fomaml = frame[frame["algorithm"] == "fomaml"]["score"].to_numpy()
    assert mf["t_p"] == pytest.approx(scipy_stats.ttest_rel(maml, fomaml).pvalue)
    assert mf["wilcoxon_p"] == pytest.approx(scipy_stats.wilcoxon(maml, fomaml).pvalue)
    # Holm over the three pairs: this p (the largest) is multiplied by 1, after the running maximum
    assert mf["t_p_holm"] == pytest.approx(max(holm(table["t_p"].to_numpy())))
    assert mf["verdict"] == "no significant difference"


def test_pairwise_over_seeds_averages_episodes_and_respects_lower_is_better():
    frame = scores_frame({"maml": [[1.0, 1.2], [0.9, 1.1], [1.0, 1.0]],      # seed means 1.1, 1.0, 1.0
                          "reptile": [[2.0, 2.2], [2.1, 2.1], [2.0, 2.4]]})  # seed means 2.1, 2.1, 2.2
    row = pairwise(frame, "seed", higher_is_better=False).iloc[0]
    assert row["n"] == 3 and row["difference"] == pytest.approx(-(1.0 + 1.1 + 1.2) / 3)
    assert row["t_p"] == pytest.approx(scipy_stats.ttest_rel([1.1, 1.0, 1.0], [2.1, 2.1, 2.2]).pvalue)
    assert row["verdict"] == "maml beats reptile"  # lower MSE is better


def test_aligned_keeps_only_units_both_algorithms_have():
    frame = scores_frame({"a": [[1, 2, 3]], "b": [[4, 5]]})
    pair = aligned(frame, "a", "b", "episode")
    assert list(pair.index) == [(0, 0), (0, 1)] and list(pair["a"]) == [1, 2]
    row = pairwise(scores_frame({"a": [[1]], "b": [[2]]}), "episode").iloc[0]
    assert row["n"] == 1 and row["verdict"] == "too few pairs to test"


def test_algorithms_without_a_shared_seed_are_paired_per_episode_on_their_seed_means():
    # a ran seeds 0 and 1 on episodes 0-2; b only seed 2 (say a's other seeds diverged): no (seed, episode)
    # pair exists, so each episode pairs a's mean over its seeds with b's score on that episode
    frame = pd.DataFrame([{"algorithm": "a", "seed": s, "episode": e, "score": v}
                          for s, values in [(0, [1.0, 2.0, 3.0]), (1, [3.0, 4.0, 7.0])] for e, v in enumerate(values)]
                         + [{"algorithm": "b", "seed": 2, "episode": e, "score": v} for e, v in enumerate([1.0, 1.0, 2.0])])
    pair = aligned(frame, "a", "b", "episode")
    assert list(pair.index) == [0, 1, 2] and list(pair["a"]) == [2.0, 3.0, 5.0] and list(pair["b"]) == [1.0, 1.0, 2.0]
    row = pairwise(frame, "episode").iloc[0]
    assert row["n"] == 3 and row["difference"] == pytest.approx(2.0)  # mean of 1, 2, 3
    assert row["t_p"] == pytest.approx(scipy_stats.ttest_rel([2.0, 3.0, 5.0], [1.0, 1.0, 2.0]).pvalue)
    assert len(aligned(frame, "a", "b", "seed")) == 0  # across seeds nothing is paired
