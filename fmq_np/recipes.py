"""The training recipes of the float models shipped in ``data/models/`` (and how to retrain them).

Every recipe is the paper's FM training (CondOT path, skewed times, AdamW betas (0.9, 0.95), linear LR decay to
~0, EMA of the weights) on a small :class:`~fmq_np.nn.UNetVelocity`, sized for 2 CPU cores:

- width 16 with levels (1, 2, 2): 187 k parameters at 28×28. Measured on one core, a width-32 step costs 2.8×
  a width-16 step (1.65 vs 0.60 s at batch 64), and at a fixed CPU budget more steps of the narrow net gave
  better samples than fewer steps of the wide one (issue 10's measurement: width 16, 4,000 steps at batch 64
  already draws recognisable digits);
- batch 64: a batch-32 step costs half as much (0.31 s) but the loss is noisier at the same LR; 64 is the
  size the paper's small-image runs use per device;
- ``steps`` per dataset: as many as the training budget of one work session on 2 shared cores allowed: 4000 for
  MNIST and Fashion-MNIST (~75 min each on one core here), 600 for the three stand-ins (their data are crops of
  five photographs and 100 faces; see the reproduction report for what they can and cannot show);
- ``then``: continuation stages, run in a later session (:func:`stages`). After 4000 steps the MNIST model's FD
  was 1.65× the real-data floor at n = 2000, against the 1.5× goal; a second stage from the EMA weights with a
  fresh linear decay from 5e-4 (3000 more steps, ~0.75 s a step on one core) keeps the 4000 steps already paid
  for, where a longer single run would have to start over (the LR decay is tied to the total steps).
- Fashion-MNIST is the exception to width 16: the width-16 model gained less with each stage (13× its floor
  after 4000 steps, 3.91× after 10,000, 3.27× after 17,000 in 3.85 CPU-hours; 20 heun2 steps, n = 2000), where
  width 32 (0.74 M parameters) reached 4.43× after 4500 steps (1.7 h) and **2.65×** after a second stage of 4000
  steps from 5e-4 (8500 steps, 2.8 h): better per CPU-hour from the first hour (benchmarks/README.md). It is
  shipped since 2026-12-04; the width-16 model and its checkpoints are in git history before that. A third
  stage (4000 steps from 4e-4, 50 min on one core with the Winograd convolutions) bought little: 2.60× with 20
  heun2 steps (18.1 against 18.5), 5.59× with the reproduction's 4 steps (39.0 against 43.3), so at 8000
  training images this network has about converged and more steps are not the way to the 1.5× goal. Nor is
  more data: a fourth stage on 3× the images (train + extra) measured 2.58× (benchmarks/extra_data_stage.py).

``train(name, out, checkpoint)`` runs a recipe with checkpoints and resume; ``benchmarks/train_models.py``
drives it for every shipped model. The model file records the recipe, the steps, the wall time and the dataset
in its metadata (``meta["recipe"]``, ``meta["trained_steps"]``, ``meta["seconds"]``, ``meta["dataset"]``).
"""
import os
import time

import numpy as np

from .errors import InputError

#: name of the shipped model -> (dataset, recipe); the recipe keys are those :func:`train` passes to ``fit``
RECIPES = {
    "mnist": ("mnist", dict(width=16, mults=(1, 2, 2), steps=4000, batch=64, lr=1e-3, ema=0.999,
                            then=(dict(steps=3000, lr=5e-4),))),
    "fashion": ("fashion", dict(width=32, mults=(1, 2, 2), steps=4500, batch=64, lr=1e-3, ema=0.999,
                                ema_warmup=True, then=(dict(steps=4000, lr=5e-4), dict(steps=4000, lr=4e-4)))),
    "cifar-standin": ("cifar-standin", dict(width=16, mults=(1, 2, 2), steps=600, batch=64, lr=1e-3, ema=0.99,
                                            ema_warmup=True)),
    "faces": ("faces", dict(width=16, mults=(1, 2, 2), steps=600, batch=32, lr=1e-3, ema=0.99, ema_warmup=True)),
    "imagenet-standin": ("imagenet-standin", dict(width=16, mults=(1, 2, 2), steps=600, batch=64, lr=1e-3,
                                                  ema=0.99, ema_warmup=True)),
}
#: recipes being tried as replacements of a shipped model: same form as :data:`RECIPES`, trained by
#: ``benchmarks/train_models.py NAME`` into ``benchmarks/checkpoints/NAME.h5`` (not shipped) and measured against the
#: shipped model by ``benchmarks/float_fd.py DATASET --model ...``; one that measures better is promoted into
#: :data:`RECIPES` with its checkpoints (the width-32 Fashion-MNIST recipe was "fashion-w32" until 2026-12-04)
CANDIDATES = {
    # capacity for Fashion-MNIST: width 32 converged near 2.6x its floor with steps and data to spare (above). After
    # the same 4500 steps width 48 (1.67 M parameters, 1.35 steps/s on 2 threads against 2.6) measured 4.28x
    # against width 32's 4.43x (20 heun2 steps, n = 2000): worse per CPU-hour, not continued (benchmarks/README.md)
    "fashion-w48": ("fashion", dict(width=48, mults=(1, 2, 2), steps=4500, batch=64, lr=1e-3, ema=0.999,
                                    ema_warmup=True)),
}
#: feature networks of the Fréchet distance: ``features_<dataset>`` -> (dataset, recipe of a
#: :class:`~fmq_np.nn.Classifier` with a ``hidden``-unit penultimate layer over the flattened conv maps, trained on
#: the dataset's labels with AdamW, linear LR decay, random shifts of up to ``shift`` pixels and, with ``flip``,
#: random left-right flips; with ``extra``, on the dataset's ``extra`` split too, images the generative models never
#: see). The flattened form learns far faster than the global-average-pool one (MNIST: 39 % test accuracy after
#: 100 steps pooled). On the 8000 training images alone MNIST reached 97.7 % (1500 steps) and Fashion-MNIST 87.3 %
#: (3000 steps, with flips): short of 88 %; the 16000 extra images close that gap. MNIST reaches 98.2 % in 3500.
FEATURE_RECIPES = {
    f"features_{d}": (d, dict(width=16, hidden=128, steps=steps, batch=64, lr=1e-3, shift=2, flip=flip, extra=extra,
                              seed=0))
    for d, steps, flip, extra in (("mnist", 3500, False, False), ("fashion", 4000, True, True),
                                  ("cifar-standin", 400, True, False), ("imagenet-standin", 400, True, False))
}
#: the paper's fixed parts of every recipe
PAPER_RECIPE = dict(betas=(0.9, 0.95), schedule="linear", times="skewed", seed=0)


def recipe(name):
    """``(dataset, settings)`` of shipped model ``name`` (a key of :data:`RECIPES` or :data:`FEATURE_RECIPES`) or
    of candidate ``name`` (:data:`CANDIDATES`); settings is JSON-able."""
    if name in FEATURE_RECIPES:
        return FEATURE_RECIPES[name]
    unets = {**RECIPES, **CANDIDATES}
    if name not in unets:
        raise InputError(f"unknown recipe {name!r}; choose from {', '.join([*unets, *FEATURE_RECIPES])}")
    dataset, settings = unets[name]
    full = dict(settings, **PAPER_RECIPE)
    return dataset, {k: list(v) if isinstance(v, tuple) else v for k, v in full.items()}


def build(name):
    """A fresh (untrained) U-Net of recipe ``name``."""
    from . import datasets, nn
    dataset, settings = recipe(name)
    c, size, _ = datasets.data_shape(dataset)
    return nn.UNetVelocity(channels=c, size=size, width=settings["width"], mults=settings["mults"],
                           seed=settings["seed"])


def total_steps(settings):
    """Training steps of a recipe's ``settings``, its continuation stages (``then``) included."""
    return settings["steps"] + sum(stage["steps"] for stage in settings.get("then", ()))


def stages(settings):
    """The ``fit`` settings of each stage of a recipe, in order. Stage 1 is ``settings`` without ``then``; stage k
    (k ≥ 2) continues from the EMA weights stage k − 1 ended with, with a fresh AdamW, its own ``steps`` and ``lr``
    (a new linear decay), the EMA kept at full decay from the start (no warm-up: its starting weights are already
    good) and seed ``seed + k − 1`` (other batches than stage 1)."""
    first = {k: v for k, v in settings.items() if k != "then"}
    out = [first]
    for k, stage in enumerate(settings.get("then", ()), start=2):
        out.append(dict(first, **stage, ema_warmup=False, seed=first["seed"] + k - 1))
    return out


def stage_checkpoint(checkpoint, k):
    """Checkpoint path of stage ``k`` (1-based) of a run whose stage-1 checkpoint is ``checkpoint``."""
    if k == 1:
        return checkpoint
    root, ext = os.path.splitext(checkpoint)
    return f"{root}.stage{k}{ext}"


def train(name, out, checkpoint, checkpoint_every=250, progress=None):
    """Train recipe ``name`` stage by stage (each resuming from its checkpoint, :func:`stage_checkpoint`, when it
    exists) and save the EMA model to ``out``.

    Returns ``(model, meta)``. Ctrl-C (and the end of every ``checkpoint_every`` steps) leaves a resumable
    checkpoint; a finished stage's checkpoint is reused as it is; ``out`` is written only when every stage has
    finished.
    """
    from . import datasets, flow, io
    dataset, settings = recipe(name)
    model = build(name)
    data = datasets.load(dataset, seed=settings["seed"])
    t0 = time.perf_counter()
    seconds = 0.0
    for k, stage in enumerate(stages(settings), start=1):
        hist = flow.fit(model, data, steps=stage["steps"], batch_size=stage["batch"], lr=stage["lr"],
                        seed=stage["seed"], betas=tuple(stage["betas"]), ema_decay=stage["ema"],
                        # the first MNIST / Fashion-MNIST stage predates fit's EMA warm-up and ran without it
                        ema_warmup=stage.get("ema_warmup", False),
                        schedule=stage["schedule"], times=stage["times"],
                        checkpoint=stage_checkpoint(checkpoint, k), checkpoint_every=checkpoint_every,
                        resume=True, progress=progress, meta={"dataset": dataset, "recipe": stage, "stage": k})
        seconds += hist.seconds
    tail = hist.loss[-200:]
    meta = {"dataset": dataset, "recipe": settings, "recipe_name": name, "trained_steps": total_steps(settings),
            "seconds": seconds, "final_loss": float(sum(tail) / len(tail)), "train_images": len(data),
            "session_seconds": time.perf_counter() - t0}
    io.save_model(out, model, meta=meta)
    return model, meta


def train_features(name, out, progress=None):
    """Train feature network ``name`` (a key of :data:`FEATURE_RECIPES`), measure its test accuracy and save it to
    ``out`` (meta: recipe, accuracy, wall time, dataset). Returns ``(net, meta)``."""
    from . import datasets, io, nn
    from ._progress import Progress
    dataset, settings = recipe(name)
    x, y = datasets.load(dataset, return_labels=True)
    if settings["extra"]:
        x_extra, y_extra = datasets.load(dataset, return_labels=True, split="extra")
        x, y = np.concatenate([x, x_extra]), np.concatenate([y, y_extra])
    x_test, y_test = datasets.load(dataset, return_labels=True, split="test")
    net = nn.Classifier(channels=x.shape[1], size=x.shape[2], n_classes=int(y.max()) + 1, width=settings["width"],
                        hidden=settings["hidden"], seed=settings["seed"])
    rng = np.random.default_rng(settings["seed"])
    opt = nn.AdamW(net.parameters(), lr=settings["lr"], betas=(0.9, 0.999))
    lr_at = nn.lr_schedule("linear", lr=settings["lr"], steps=settings["steps"], final_lr=1e-6)
    t0 = time.perf_counter()
    with Progress(settings["steps"], name, enabled=progress) as bar:
        for step in range(settings["steps"]):
            idx = rng.integers(0, len(x), settings["batch"])
            batch = random_shifts(x[idx], settings["shift"], rng)
            if settings["flip"]:
                batch = np.where(rng.random(len(batch))[:, None, None, None] < 0.5, batch[..., ::-1], batch)
            loss, dlogits = nn.cross_entropy(net.forward(batch), y[idx])
            net.backward(dlogits)
            opt.step(net.gradients(), lr=lr_at(step))
            bar.update(1, loss=loss)
    accuracy = classifier_accuracy(net, x_test, y_test)
    meta = {"dataset": dataset, "recipe": settings, "recipe_name": name, "test_accuracy": accuracy,
            "test_images": len(x_test), "train_images": len(x), "features": settings["hidden"],
            "seconds": time.perf_counter() - t0}
    io.save_model(out, net, meta=meta)
    return net, meta


def random_shifts(images, max_shift, rng):
    """Each image (n, C, H, W) moved by a random whole-pixel offset in [−max_shift, max_shift]² (edges filled
    with the image minimum, −1 for data in [−1, 1]); returns a new float32 array."""
    n, _, h, w = images.shape
    pad = int(max_shift)
    padded = np.pad(images, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=-1.0)
    dy, dx = rng.integers(0, 2 * pad + 1, (2, n))
    rows = dy[:, None] + np.arange(h)[None, :]
    cols = dx[:, None] + np.arange(w)[None, :]
    out = padded[np.arange(n)[:, None, None, None], np.arange(images.shape[1])[None, :, None, None],
                 rows[:, None, :, None], cols[:, None, None, :]]
    return np.ascontiguousarray(out, dtype=np.float32)


def classifier_accuracy(net, images, labels, batch_size=500):
    """Fraction of ``images`` (n, C, H, W) whose arg-max logit is the label (n,)."""
    hits = sum(int(np.sum(np.argmax(net(images[i:i + batch_size]), axis=1) == labels[i:i + batch_size]))
               for i in range(0, len(images), batch_size))
    return hits / len(images)
