"""Finite-difference gradient checks in float64 (after HIPS/autograd's check_grads).

A check works on a scalar L = sum(dy * f(arrays)) for a fixed random dy, where ``forward()`` evaluates f from the
*current contents* of ``arrays`` (name -> float64 array, perturbed in place here) and ``backward(dy)`` returns
{name: dL/d array} for (at least) the same names. Two flavours:

* :func:`check_directional` compares the derivative along random directions u with <grad, u> (central
  differences, step ``eps``), per array or, with ``joint=True``, for all arrays perturbed together (cheap, for
  whole models: a wrong gradient of any array changes <grad, u> far beyond the tolerance);
* :func:`check_jacobian` compares every entry of the gradient (for tiny layers).
"""
import numpy as np


def _loss(forward, dy):
    return float(np.sum(dy * forward()))


def _analytic(forward, backward, rng):
    y = forward()
    dy = rng.standard_normal(y.shape)
    return dy, {k: np.array(g, dtype=np.float64, copy=True) for k, g in backward(dy).items()}


def _assert_close(name, num, ana, rtol, atol):
    if not abs(num - ana) <= atol + rtol * max(abs(num), abs(ana)):
        raise AssertionError(f"gradient of {name!r}: finite difference {num!r} vs backward {ana!r}")


def check_directional(forward, backward, arrays, rng, eps=1e-6, rtol=1e-5, atol=1e-8, directions=1, joint=False):
    """Random-direction central-difference check of ``arrays``; raises AssertionError on mismatch."""
    dy, grads = _analytic(forward, backward, rng)
    assert set(arrays) <= set(grads), f"backward returned {sorted(grads)} for arrays {sorted(arrays)}"
    groups = [list(arrays)] if joint else [[name] for name in arrays]
    for names in groups:
        for _ in range(directions):
            us = {name: rng.standard_normal(arrays[name].shape) for name in names}
            for name in names:
                arrays[name] += eps * us[name]
            lp = _loss(forward, dy)
            for name in names:
                arrays[name] -= 2 * eps * us[name]
            lm = _loss(forward, dy)
            for name in names:
                arrays[name] += eps * us[name]
            ana = sum(float(np.sum(grads[name] * us[name])) for name in names)
            _assert_close(" + ".join(names) if len(names) < 4 else "all arrays", (lp - lm) / (2 * eps), ana,
                          rtol, atol)


def check_jacobian(forward, backward, arrays, rng, eps=1e-6, rtol=1e-5, atol=1e-8):
    """Entry-by-entry central-difference check of the gradient of every array (use on tiny layers only)."""
    dy, grads = _analytic(forward, backward, rng)
    assert set(grads) == set(arrays), f"backward returned {sorted(grads)} for arrays {sorted(arrays)}"
    for name, a in arrays.items():
        flat = a.reshape(-1)
        num = np.empty(flat.size)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + eps
            lp = _loss(forward, dy)
            flat[i] = old - eps
            lm = _loss(forward, dy)
            flat[i] = old
            num[i] = (lp - lm) / (2 * eps)
        ana = grads[name].reshape(-1)
        bad = np.abs(num - ana) > atol + rtol * np.maximum(np.abs(num), np.abs(ana))
        if bad.any():
            i = int(np.argmax(bad))
            raise AssertionError(f"gradient of {name!r}[{i}]: finite difference {num[i]!r} vs backward {ana[i]!r}")


def module_arrays(module, **inputs):
    """The dict of arrays to check for a module: its live parameters plus the given inputs (all float64)."""
    arrays = dict(module.parameters())
    for k, v in inputs.items():
        arrays[k] = v
    return arrays
