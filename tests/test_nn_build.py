"""fq.nn.build_for_dataset / check_fits: the network fits the dataset's samples, and a misfit is an InputError."""
import numpy as np
import pytest

import fmq_np as fq
from fmq_np.errors import InputError


@pytest.mark.parametrize("name", fq.datasets.TOYS)
def test_mlp_maps_the_toys_points_to_velocities_of_their_shape(name):
    x = fq.datasets.load(name, n=7, seed=0)
    m = fq.nn.build_for_dataset(name, "mlp", hidden=8, depth=2, seed=0)
    assert isinstance(m, fq.nn.MLPVelocity)
    v = m(x, np.full(len(x), 0.5, np.float32))
    assert v.shape == x.shape and np.isfinite(v).all()
    assert m.config()["hidden"] == 8 and m.config()["depth"] == 2


def test_unet_maps_digits_images_to_velocities_of_their_shape():
    x = fq.datasets.load("digits", n=3, seed=0)
    m = fq.nn.build_for_dataset("digits", "unet", width=8, seed=0)
    assert isinstance(m, fq.nn.UNetVelocity)
    v = m(x, np.full(len(x), 0.5, np.float32))
    assert v.shape == x.shape and np.isfinite(v).all()
    assert m.config()["width"] == 8


def test_the_seed_draws_the_initial_weights():
    a, b, c = (fq.nn.build_for_dataset("moons", hidden=8, depth=1, seed=s) for s in (3, 3, 4))
    pa, pb, pc = a.parameters(), b.parameters(), c.parameters()
    assert all(np.array_equal(pa[k], pb[k]) for k in pa)
    assert any(not np.array_equal(pa[k], pc[k]) for k in pa)


def test_an_alias_fits_under_its_canonical_name():
    assert fq.nn.check_fits("Swiss-Roll", "mlp") == "swissroll"


@pytest.mark.parametrize("dataset,architecture,needles", [
    ("digits", "mlp", ("2-D dataset", "moons", "unet for digits")),
    ("moons", "unet", ("image dataset", "digits")),
    ("moons", "transformer", ("mlp, unet", "'transformer'")),
])
def test_a_misfit_names_the_argument_and_what_fits(dataset, architecture, needles):
    with pytest.raises(InputError) as exc:
        fq.nn.build_for_dataset(dataset, architecture)
    assert str(exc.value).startswith("architecture") and all(n in str(exc.value) for n in needles)
    with pytest.raises(InputError, match="^--model "):
        fq.nn.check_fits(dataset, architecture, name="--model")


def test_every_dataset_has_an_architecture_that_fits_it():
    for name in fq.datasets.TOYS + fq.datasets.IMAGES:
        fits = [a for a in fq.nn.ARCHITECTURES if name in fq.nn.ARCHITECTURES[a][0]]
        assert len(fits) == 1
