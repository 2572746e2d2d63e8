"""The W2-optimal DP codebook: optimal against brute force and the plain O(k n^2) programme."""
import numpy as np
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from fmq_np.quant import cpu

from naive import brute_force_cost, codebook_cost, dp_cost

NONE = np.empty((0, 0))


def _cost(x, k, weights=None):
    wts = NONE if weights is None else weights[None, :]
    levels = cpu.optimal_levels(x[None, :], k, wts)[0]
    assert (np.diff(levels) >= 0).all()
    return codebook_cost(x, levels, weights)


@given(hnp.arrays(np.float64, st.integers(1, 12), elements=st.floats(-10, 10, width=32)), st.integers(1, 12),
       st.booleans(), st.randoms(use_true_random=False))
@settings(max_examples=60, deadline=None)
def test_dp_is_optimal_against_brute_force(x, k, weighted, rnd):
    wt = np.array([rnd.choice([0.0, 0.5, 1.0, 3.0]) for _ in x]) if weighted else None
    if wt is not None and wt.sum() == 0:
        wt[0] = 1.0
    best = brute_force_cost(x, k, wt)
    assert _cost(x, k, wt) <= best + 1e-9 * (1 + best)


def test_dp_matches_quadratic_dp_on_medium_input():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(60), rng.standard_t(2, 40)])
    for k in (2, 5, 16):
        ref = dp_cost(x, k)
        np.testing.assert_allclose(_cost(x, k), ref, rtol=1e-9, atol=1e-12)


def test_parallel_single_group_path_equals_group_parallel_path():
    rng = np.random.default_rng(2)
    w = rng.laplace(size=(3, 2000))
    by_rows = cpu.optimal_levels(w, 8, NONE)                        # G >= threads: prange over groups
    one = np.stack([cpu.optimal_levels(w[g:g + 1], 8, NONE)[0] for g in range(3)])   # parallel layers
    np.testing.assert_allclose(by_rows, one, rtol=0, atol=1e-12)


def test_dp_hand_worked():
    # {0, 0, 1} | {10}: levels 1/3 and 10
    np.testing.assert_allclose(cpu.optimal_levels(np.array([[0.0, 0.0, 1.0, 10.0]]), 2, NONE), [[1 / 3, 10.0]])
    # importance 100 on the 1 pulls the first level to 100/102
    wt = np.array([[1.0, 1.0, 100.0, 1.0]])
    np.testing.assert_allclose(cpu.optimal_levels(np.array([[0.0, 0.0, 1.0, 10.0]]), 2, wt), [[100 / 102, 10.0]])
    # fewer points than levels: every point is a level, padded with the last
    np.testing.assert_array_equal(cpu.optimal_levels(np.array([[2.0, -1.0]]), 4, NONE), [[-1.0, 2.0, 2.0, 2.0]])
