"""FD statistics (fmq_np.eval.fd_stats): floor of real data, paired bootstrap intervals and differences."""
import numpy as np
import pytest

import fmq_np as fq
from fmq_np.eval import frechet_distance
from fmq_np.eval.fd_stats import fd_floor, paired_bootstrap


def gaussian(n, d, shift=0.0, scale=1.0, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d)) * scale + shift


def test_point_estimates_are_the_plain_frechet_distance():
    ref = gaussian(400, 6, seed=1)
    sets = {"a": gaussian(300, 6, seed=2), "b": gaussian(300, 6, shift=0.3, seed=3)}
    stats = paired_bootstrap([sets], ref, n_boot=20)
    for name, f in sets.items():
        assert stats.fd(name)["fd"] == pytest.approx(frechet_distance(f, ref), rel=1e-9)
    d = stats.diff("b", "a")
    assert d["diff"] == pytest.approx(frechet_distance(sets["b"], ref) - frechet_distance(sets["a"], ref), rel=1e-9)


def test_a_real_shift_is_significant_and_no_shift_is_not():
    ref = gaussian(1000, 4, seed=1)
    same, other = [], []
    for trial in range(6):
        base = gaussian(500, 4, seed=10 + trial)
        sets = {"base": base, "same": gaussian(500, 4, seed=100 + trial),
                "shifted": base + 0.5}                              # paired: row i of "shifted" comes from row i
        stats = paired_bootstrap([sets], ref, n_boot=200, seed=trial)
        same.append(stats.diff("same", "base")["significant"])
        other.append(stats.diff("shifted", "base"))
    assert all(d["significant"] and d["ci"][0] > 0 for d in other)   # FD grows by about 4 * 0.5**2 = 1
    assert sum(same) <= 2                                            # 95 % intervals: rarely significant


def test_interval_covers_the_population_value_most_of_the_time():
    """FD between N(0.3, I) and N(0, I) in d = 3 is 3 * 0.3**2 = 0.27; the basic interval should cover it."""
    covered = 0
    for trial in range(20):
        ref = gaussian(1500, 3, seed=200 + trial)
        stats = paired_bootstrap([{"x": gaussian(1500, 3, shift=0.3, seed=300 + trial)}], ref, n_boot=200,
                                 seed=trial)
        lo, hi = stats.fd("x")["ci"]
        covered += lo <= 0.27 <= hi
    assert covered >= 15


def test_seeds_are_averaged_and_recorded():
    ref = gaussian(300, 3, seed=1)
    groups = [{"m": gaussian(200, 3, shift=0.2, seed=s)} for s in range(3)]
    stats = paired_bootstrap(groups, ref, n_boot=30)
    res = stats.fd("m")
    assert res["groups"] == 3 and res["n_samples"] == 200 and len(res["per_group"]) == 3
    assert res["fd"] == pytest.approx(np.mean([frechet_distance(g["m"], ref) for g in groups]))
    assert "bootstrap" in res["method"] and "B=30" in res["method"]


def test_bootstrap_is_reproducible_with_its_seed():
    ref, sets = gaussian(200, 3, seed=1), {"a": gaussian(150, 3, seed=2), "b": gaussian(150, 3, seed=3)}
    assert paired_bootstrap([sets], ref, n_boot=25, seed=4).diff("a", "b") == \
        paired_bootstrap([sets], ref, n_boot=25, seed=4).diff("a", "b")


def test_floor_uses_disjoint_draws_of_real_data():
    train, ref = gaussian(1000, 4, seed=5), gaussian(500, 4, seed=6)
    floor = fd_floor(train, ref, n=300, max_draws=4)
    assert floor["draws"] == 3 and floor["n_samples"] == 300 and len(floor["values"]) == 3
    order = np.random.default_rng(0).permutation(1000)
    assert floor["values"][0] == pytest.approx(frechet_distance(train[order[:300]], ref), rel=1e-9)
    assert floor["mean"] < frechet_distance(gaussian(300, 4, shift=0.5, seed=7), ref)


@pytest.mark.parametrize("call,needle", [
    (lambda: paired_bootstrap([], gaussian(10, 2)), "non-empty list"),
    (lambda: paired_bootstrap([{"a": gaussian(10, 2)}, {"b": gaussian(10, 2)}], gaussian(10, 2)), "same sample"),
    (lambda: paired_bootstrap([{"a": gaussian(10, 2), "b": gaussian(12, 2)}], gaussian(10, 2)), "same number"),
    (lambda: paired_bootstrap([{"a": gaussian(10, 3)}], gaussian(10, 2)), "has 3 features, expected 2"),
    (lambda: paired_bootstrap([{"a": np.full((10, 2), np.nan)}], gaussian(10, 2)), "NaN"),
    (lambda: paired_bootstrap([{"a": gaussian(10, 2)}], gaussian(10, 2), n_boot=True), "n_boot"),
    (lambda: paired_bootstrap([{"a": gaussian(10, 2)}], gaussian(10, 2)).fd("b"), "no sample set named 'b'"),
    (lambda: fd_floor(gaussian(10, 2), gaussian(10, 2), n=20), "cannot give a draw"),
])
def test_bad_input_is_an_input_error(call, needle):
    with pytest.raises(fq.InputError, match=needle):
        call()
