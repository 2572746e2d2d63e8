"""The shipped image datasets: shapes, ranges, splits, labels, determinism and errors."""
import numpy as np
import pytest

import fmq_np as fq

SHAPES = {"mnist": (1, 28, 28), "fashion": (1, 28, 28), "cifar-standin": (3, 32, 32), "faces": (1, 24, 24),
          "imagenet-standin": (3, 32, 32)}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_images_are_float32_in_range_with_the_documented_shape(name):
    x = fq.datasets.load(name, n=50, seed=1)
    assert x.dtype == np.float32 and x.shape == (50,) + SHAPES[name]
    assert x.min() >= -1.0 and x.max() <= 1.0 and x.std() > 0.1
    assert fq.datasets.data_shape(name) == SHAPES[name]
    assert np.array_equal(x, fq.datasets.load(name, n=50, seed=1))
    assert not np.array_equal(x, fq.datasets.load(name, n=50, seed=2))


@pytest.mark.parametrize("name,n_train,n_test,classes", [("mnist", 8000, 5000, 10), ("fashion", 8000, 5000, 10),
                                                         ("cifar-standin", 6000, 1000, 5),
                                                         ("imagenet-standin", 6000, 1000, 5)])
def test_splits_and_labels(name, n_train, n_test, classes):
    x, y = fq.datasets.load(name, return_labels=True)
    xt, yt = fq.datasets.load(name, return_labels=True, split="test")
    assert (len(x), len(xt)) == (n_train, n_test) and y.dtype == np.int64
    assert set(np.unique(y)) == set(range(classes)) and set(np.unique(yt)) == set(range(classes))
    assert not np.array_equal(x[:len(xt)], xt)
    assert fq.datasets.has_labels(name)


@pytest.mark.parametrize("name", ["mnist", "fashion"])
def test_extra_split_holds_other_training_images(name):
    x = fq.datasets.load(name)
    xe, ye = fq.datasets.load(name, return_labels=True, split="extra")
    assert len(xe) == 16000 and set(np.unique(ye)) == set(range(10))
    rows = {r.tobytes() for r in x[:2000]}
    assert sum(r.tobytes() in rows for r in xe[:2000]) <= 2       # other images (a rare exact duplicate at most)


def test_stand_ins_differ_and_loads_are_copies():
    cifar, imnet = fq.datasets.load("cifar-standin"), fq.datasets.load("imagenet-standin")
    assert not np.allclose(cifar[:100], imnet[:100])
    # the blurred stand-in is smoother: smaller mean neighbour differences
    assert np.abs(np.diff(imnet, axis=3)).mean() < np.abs(np.diff(cifar, axis=3)).mean()
    cifar[:] = 0.0
    assert fq.datasets.load("cifar-standin").std() > 0.1


@pytest.mark.parametrize("call,needle", [
    (lambda: fq.datasets.load("cifar10"), "unknown dataset 'cifar10'"),
    (lambda: fq.datasets.load("faces", return_labels=True), "has no labels"),
    (lambda: fq.datasets.load("faces", split="test"), "single split"),
    (lambda: fq.datasets.load("cifar-standin", split="extra"), "has no 'extra' split"),
    (lambda: fq.datasets.load("mnist", split="val"), "split must be one of train, test, extra"),
    (lambda: fq.datasets.load("mnist", split="valid"), "split must be"),
    (lambda: fq.datasets.load("mnist", n=9000), "has 8000 samples"),
])
def test_bad_requests_raise_input_error(call, needle):
    with pytest.raises(fq.InputError) as info:
        call()
    assert needle in str(info.value)


def test_missing_file_is_a_format_error(tmp_path, monkeypatch):
    fq.datasets.load("mnist", n=1)                         # cached from the shipped folder
    monkeypatch.setenv("FMQ_NP_DATA", str(tmp_path))
    with pytest.raises(fq.FormatError, match="dataset file missing"):
        fq.datasets.load("mnist")
