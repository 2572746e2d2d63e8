"""The models shipped in data/models: float U-Nets that match their recipes, FD feature nets as accurate as they
say, and an FD that sees what a person sees (worse-looking images score worse)."""
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from fmq_np import datasets, flow, recipes, reproduce
from fmq_np.eval import frechet_distance, image_features
from fmq_np.errors import InputError

#: the accuracy each shipped feature net must reach on the shipped test split (issue 10)
MIN_ACCURACY = {"mnist": 0.98, "fashion": 0.88}


@pytest.mark.parametrize("name", list(recipes.RECIPES))
def test_float_model_matches_its_recipe(name):
    model, meta, path = reproduce.load_shipped_model(name)
    dataset, settings = recipes.recipe(name)
    assert meta["dataset"] == dataset and meta["trained_steps"] == recipes.total_steps(settings) and meta["seconds"] > 0
    assert tuple(model.config()[k] for k in ("channels", "size")) == datasets.data_shape(dataset)[:2]


def test_candidate_recipes_build_and_replace_no_shipped_model(monkeypatch):
    name = "fashion-narrow"
    monkeypatch.setitem(recipes.CANDIDATES, name, ("fashion", dict(width=8, mults=(1, 2), steps=10, batch=8,
                                                                    lr=1e-3, ema=0.99)))
    dataset, settings = recipes.recipe(name)
    assert name not in recipes.RECIPES and dataset in recipes.RECIPES
    assert settings["betas"] == list(recipes.PAPER_RECIPE["betas"])           # the paper's fixed parts too
    model = recipes.build(name)
    assert model.config()["width"] == settings["width"]
    assert tuple(model.config()[k] for k in ("channels", "size")) == datasets.data_shape(dataset)[:2]
    with pytest.raises(InputError, match="unknown recipe.*" + name):
        recipes.recipe(name + "-nope")


@pytest.mark.parametrize("dataset", sorted(MIN_ACCURACY))
def test_feature_net_is_as_accurate_as_recorded(dataset):
    net, meta, _ = reproduce.load_feature_net(dataset, shape=datasets.data_shape(dataset))
    x, y = datasets.load(dataset, return_labels=True, split="test")
    measured = recipes.classifier_accuracy(net, x, y)
    assert measured == pytest.approx(meta["test_accuracy"], abs=1e-12)
    assert measured >= MIN_ACCURACY[dataset] and meta["features"] >= 64
    assert net.features(x[:2]).shape == (2, meta["features"])


@pytest.fixture(scope="module")
def mnist_fd():
    net, _, _ = reproduce.load_feature_net("mnist")
    test = datasets.load("mnist", split="test")
    ref = image_features(net, test[:2500])
    return net, ref, test[2500:3500]


def test_fd_grows_as_real_images_are_degraded(mnist_fd):
    net, ref, real = mnist_fd
    rng = np.random.default_rng(0)

    def fd(images):
        return frechet_distance(image_features(net, np.clip(images, -1, 1).astype(np.float32)), ref)
    blur1 = gaussian_filter(real, sigma=(0, 0, 1, 1))
    blur2 = gaussian_filter(real, sigma=(0, 0, 2, 2))
    noisy = real + 0.5 * rng.standard_normal(real.shape)
    noise = rng.standard_normal(real.shape)
    scores = [fd(real), fd(blur1), fd(blur2)]
    assert scores == sorted(scores) and scores[0] * 3 < scores[1]
    assert fd(real) * 3 < fd(noisy) < fd(noise)


def test_trained_model_scores_better_than_an_untrained_one(mnist_fd):
    net, ref, real = mnist_fd
    trained, _, _ = reproduce.load_shipped_model("mnist")
    untrained = recipes.build("mnist")
    x0 = flow.noise(trained, 300, seed=1)
    fd = {name: frechet_distance(image_features(net, flow.sample(m, x0=x0, solver="heun2", steps=4,
                                                                  progress=False)), ref)
          for name, m in (("trained", trained), ("untrained", untrained))}
    floor = frechet_distance(image_features(net, real[:300]), ref)
    assert floor < fd["trained"] < fd["untrained"] and fd["trained"] * 3 < fd["untrained"]
