"""The paper's five-dataset experiment on the shipped float models: quantize with every method × bits → measure.

    from fmq_np import reproduce
    results = reproduce.run("runs/repro")          # the same as:  fmq-np reproduce --out runs/repro

Nothing is trained: every dataset's float U-Net (``data/models/<dataset>.h5``) and Fréchet feature network
(``data/models/features_<dataset>.h5``) ship with the package (recipes and retraining: :mod:`fmq_np.recipes`).
Per dataset (MNIST, Fashion-MNIST and stand-ins of CIFAR-10, CelebA and ImageNet-blurred; see
:mod:`fmq_np.datasets`):

1. the float model samples ``n_samples`` images from each of ``seeds`` noise draws; every quantized model samples
   from the *same* noise, so sample ``i`` of every model is paired with sample ``i`` of the float model;
2. for every method × bits: quantize all weights (the paper's four with ``paper_compat=True``, which quantizes
   every tensor incl. biases and norm scales except those with fewer than 2**bits values; ``ot-opt`` every tensor),
   load the dequantized weights into a copy of the model and measure
   - ``weight_mse`` beside the theory's prediction of it (:mod:`fmq_np.theory.weights`),
   - ``psnr`` / ``ssim``: the paper's velocity fidelity at t = 0 on real test images,
   - ``fd``: Fréchet distance of the samples to the real test images in the penultimate features of the shipped
     classifier, with a paired bootstrap interval and the paired differences to ``ot`` and to the float model
     (:mod:`fmq_np.eval.fd_stats`); rows at the ``headline_bits`` average ``seeds`` noise draws, the others use
     the first; the unlabelled faces have no FD (no classifier can be trained on them; see the report),
   - ``drift``: RMS difference to the float model's samples from the same noise,
   - ``latent``: the paper's latent stability (PCA of encoder + middle-block features at t = 0 on real images);
3. beside the float model's FD: the floor (FD of ``n_samples`` real training images, mean over disjoint draws),
   a noise reference (FD of clipped Gaussian noise), and the FD of the paper's own sampler settings;
4. write ``report.md`` (with a verdict on the paper's claim per dataset; :mod:`fmq_np.reproduce_report`),
   ``results.json`` (atomically, after every measured row), sample grids and a plot. Ctrl-C keeps the rows so far.
"""
import os
import platform
import sys
import time

import numpy as np

from ._validate import check_choice, check_int, is_int
from .errors import FmqError, FormatError, InputError
from .quant.tensor import METHODS

DATASETS = ("mnist", "fashion", "cifar-standin", "faces", "imagenet-standin")
BITS = (2, 3, 4, 8)
#: the paper's dataset each stand-in replaces, and the paper's solver for it
PAPER_NAMES = {"mnist": ("MNIST 28×28", "midpoint"), "fashion": ("Fashion-MNIST 28×28", "heun2"),
               "cifar-standin": ("CIFAR-10 32×32", "heun2"), "faces": ("CelebA 64×64", "dopri5"),
               "imagenet-standin": ("ImageNet (blurred) 64×64", "dopri5")}
#: solver steps of the paper's samplers (midpoint step 0.01; heun2 50 NFE; dopri5: adaptive, atol = rtol = 1e-5)
PAPER_STEPS = {"midpoint": 100, "heun2": 25, "dopri5": 50}
PAPER_TOLERANCE = 1e-5
#: run sizes. ``n_samples``: samples per FD (capped by the test images; faces: its 100 images); ``seeds``: noise
#: draws for the rows at ``headline_bits``; ``steps``: fixed steps of the default sampler (the paper's solver kind,
#: heun2 in place of dopri5); ``paper_check``: how many of the first noise draw's images the float model also
#: samples with the paper's own settings (0: none; the paper's samplers take 6–25× the default's evaluations, and
#: an adaptive dopri5 at 1e-5 more, so the check runs on a subset and is compared with the default sampler on the
#: same noise);
#: ``n_velocity``: real images of the velocity probe; ``n_boot``: bootstrap replicates; ``n_likelihood``: test
#: images whose bits/dim each model reports (0: none; Hutchinson, one fixed probe per image, the default sampler's
#: solver with twice its steps, pixel units); ``calib_n``: trajectories of the calibration that the calibrated
#: methods use (:data:`CALIBRATED`; computed only when one of them is asked for); ``tune_n``, ``tune_iters``,
#: ``tune_lr``: the trajectories, steps and level learning rate of the tuned methods' codebook tuning
#: (:data:`TUNED`; the default scale's 2000 steps at 5e-3 against 600 at 2e-3: Fashion-MNIST at 3 bits +6.7 % of
#: the float FD against +12.6 %, at 2 bits no change; benchmarks/README.md); ``standins``: what the
#: three stand-in sets use instead (their FDs carry less meaning, see the report, and cost more per image)
SCALES = {
    "tiny": dict(n_samples=24, seeds=2, headline_bits=(2,), steps=2, paper_check=0, n_velocity=8, n_boot=20,
                 n_likelihood=4, calib_n=2, tune_n=2, tune_iters=4, tune_lr=2e-3, standins={}),
    "quick": dict(n_samples=500, seeds=1, headline_bits=(2, 3), steps=4, paper_check=0, n_velocity=64,
                  n_boot=200, n_likelihood=0, calib_n=16, tune_n=64, tune_iters=300, tune_lr=2e-3,
                  standins=dict(n_samples=300)),
    "default": dict(n_samples=1000, seeds=3, headline_bits=(2, 3), steps=4, paper_check=300, n_velocity=64,
                    n_boot=200, n_likelihood=16, calib_n=32, tune_n=128, tune_iters=2000, tune_lr=5e-3,
                    standins=dict(n_samples=300, seeds=1, paper_check=100)),
    "paper": dict(n_samples=2000, seeds=3, headline_bits=(2, 3), steps="paper", paper_check=0, n_velocity=64,
                  n_boot=500, n_likelihood=256, calib_n=64, tune_n=256, tune_iters=2000, tune_lr=5e-3,
                  standins=dict(n_samples=1000)),
}
STANDINS = ("cifar-standin", "faces", "imagenet-standin")
#: the calibrated methods (issue 13; :func:`fmq_np.quant.calibrate.quantize_calibrated`): name -> (codebook method,
#: options). ``+ef`` error feedback through each layer's input Hessian, ``+fisher`` Fisher-weighted exact codebooks
#: (ot-opt only), ``+bc`` bias correction. Per channel; unlike the paper's rows they keep 1-D tensors (biases, norm
#: scales) in float, as ``quantize_model(..., calibration=)`` does. One calibration per dataset, on the float
#: model's own trajectories with the dataset's default sampler (``calib_n`` of them) plus training-path pairs.
CALIBRATED = {
    "ot+ef": ("ot", dict(error_feedback_on=True)),
    "ot-opt+ef": ("ot-opt", dict(error_feedback_on=True)),
    "uniform+ef": ("uniform", dict(error_feedback_on=True)),
    "ot-opt+fisher": ("ot-opt", dict(weighted=True, error_feedback_on=False)),
    "ot-opt+bc": ("ot-opt", dict(error_feedback_on=False, bias_correction=True)),
    "ot-opt+fisher+ef+bc": ("ot-opt", dict(weighted=True, error_feedback_on=True, bias_correction=True)),
    "ot+ef+bc": ("ot", dict(error_feedback_on=True, bias_correction=True)),
}
#: the tuned methods (issue 13; :func:`fmq_np.quant.tune.tune_codebooks`): name -> (the row that is then tuned along
#: the flow, codes). ``+tune``: codes kept, levels and float tensors fitted to the float velocity on ``tune_n``
#: trajectories of the default sampler plus training-path pairs, ``tune_iters`` steps at ``tune_lr``; ``+qat``: the
#: ``+tune`` row tuned ``tune_iters // 2`` more steps with the codes free (latent weights through the rounding,
#: straight-through; ``codes="free"``): Fashion-MNIST, 3 seeds, FD over the float model's: 2 bits +48 % → +17 %,
#: 3 bits +6.2 % → +3.3 %)
TUNED = {
    "ot+tune": ("ot", "fixed"),
    "ot-opt+ef+tune": ("ot-opt+ef", "fixed"),
    "uniform+ef+tune": ("uniform+ef", "fixed"),
    "ot-opt+ef+qat": ("ot-opt+ef+tune", "free"),
}
#: every method ``--methods`` accepts: the paper's four and ot-opt (the default sweep), then the calibrated and the
#: tuned ones
ALL_METHODS = METHODS + tuple(CALIBRATED) + tuple(TUNED)
#: the task of a dataset's sweep that samples the float model with the paper's own settings (its other tasks are
#: ``(method, bits, seeds)`` rows)
PAPER_TASK = ("paper-check",)
#: what ``--quick`` runs
QUICK = dict(datasets=("mnist", "fashion"), bits=(2, 3, 4), scale="quick")


def run(out_dir, *, datasets=DATASETS, bits=BITS, methods=METHODS, scale="default", seed=0, progress=True,
        command=None, models_dir=None, client=None, workers=None):
    """Run the sweep and write ``out_dir/report.md``, ``results.json``, PNGs; returns the results dict.

    ``datasets``: names from :data:`DATASETS`; ``bits``: widths in 1..8; ``methods``: from :data:`ALL_METHODS`;
    ``scale``: a key of :data:`SCALES`; ``seed``: offset of every noise draw (same seed → same numbers);
    ``progress``: one line per step of work on stderr; ``command``: the command line to quote in the report;
    ``models_dir``: folder of the float models and feature nets (default: the shipped ``data/models``);
    ``client``: a ``distributed.Client`` (the ``[dask]`` extra): the (method, bits) rows of each dataset run as one
    task each on its cluster (each task samples every noise seed of its row), with the same results as a serial run;
    ``workers``: the same rows in that many local processes instead (no Dask; each process gets an equal share of
    this machine's CPUs as Numba and BLAS threads). The float model's own samples and the calibration are computed
    here, before the rows are handed out; the float model's paper-sampler check is handed out with them. The
    processes are spawned, so they import the calling script: call ``run(..., workers=N)`` from under
    ``if __name__ == "__main__":``.

    A dataset that ``out_dir/results.json`` already holds complete, from a run with the same settings and the same
    model (SHA-256 of its config and weights), is reused, not measured again: a sweep can be run a few datasets at
    a time.
    """
    from .reproduce_report import finish
    datasets, bits, methods = check_args(datasets, bits, methods, scale, seed)
    if workers is not None:
        check_int("workers", workers, 1)
        if client is not None:
            raise InputError("give client (a Dask cluster) or workers (local processes), not both")
    check_models(datasets, models_dir)
    os.makedirs(out_dir, exist_ok=True)
    cfg = SCALES[scale]
    command = command or (f"fmq_np.reproduce.run({out_dir!r}, datasets={datasets}, bits={bits}, "
                          f"methods={methods}, scale={scale!r}, seed={seed})")
    results = dict(command=command, scale=scale, settings=_jsonable(cfg), seed=seed, bits=list(bits),
                   methods=list(methods), machine=f"{platform.machine()} {platform.system()}, "
                   f"{os.cpu_count()} CPUs, NUMBA_NUM_THREADS={os.environ.get('NUMBA_NUM_THREADS', 'default')}"
                   + (f", rows in {workers} local processes" if workers else ""),
                   datasets={})
    previous = _finished_datasets(out_dir, results, models_dir)
    start = time.perf_counter()

    def seconds():          # wall time of all the measurements in the report, reused ones included
        return time.perf_counter() - start + sum(e["seconds"] for e in previous.values())
    try:
        for i, name in enumerate(datasets):
            _say(progress, f"[{i + 1}/{len(datasets)}] {name}" + (" (reused from results.json)"
                                                                    if name in previous else ""))
            if name in previous:
                results["datasets"][name] = previous[name]
                continue
            _run_dataset(out_dir, name, bits, methods, cfg, seed, progress, results, models_dir,
                         client if client is not None else workers)
    except KeyboardInterrupt:       # Ctrl-C: report what was measured, then stop
        results["interrupted"] = True
        finish(out_dir, results, seconds())
        raise
    finish(out_dir, results, seconds())
    _say(progress, f"done in {results['seconds']:.0f} s -> {os.path.join(out_dir, 'report.md')}")
    return results


def _finished_datasets(out_dir, results, models_dir):
    """``{dataset: entry}`` of the complete dataset entries of ``out_dir/results.json`` that were measured with the
    settings of ``results`` (scale, seed, bits, methods) and the model file that is there now."""
    import json
    path = os.path.join(out_dir, "results.json")
    try:
        with open(path) as f:
            old = json.load(f)
    except (OSError, ValueError):
        return {}
    keys = ("scale", "settings", "seed", "bits", "methods")
    if not isinstance(old, dict) or any(old.get(k) != json.loads(json.dumps(results[k])) for k in keys):
        return {}
    done = {}
    for name, entry in (old.get("datasets") or {}).items():
        complete = isinstance(entry, dict) and "seconds" in entry and \
            len(entry.get("runs", ())) == len(results["bits"]) * len(results["methods"])
        if complete and entry.get("model_sha256") == model_digest(load_shipped_model(name, models_dir)[0]):
            done[name] = entry
    return done


def model_digest(model):
    """SHA-256 over a model's class, config and every parameter's name, dtype, shape and bytes (a file re-written
    in another HDF5 layout keeps its digest)."""
    import hashlib
    import json
    h = hashlib.sha256(f"{type(model).__name__}|{json.dumps(model.config(), sort_keys=True)}".encode())
    for name, a in model.parameters().items():
        a = np.ascontiguousarray(a)
        h.update(f"|{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def check_args(datasets, bits, methods, scale, seed):
    """Validate :func:`run`'s arguments (InputError naming the bad one); returns cleaned datasets, bits, methods."""
    from .datasets import canonical
    if isinstance(datasets, str) or not datasets:
        raise InputError(f"datasets must be a non-empty list of names, got {datasets!r}")
    datasets = [canonical(d) for d in datasets]
    for d in datasets:
        if d not in DATASETS:
            raise InputError(f"datasets: {d!r} is not part of the sweep; choose from {', '.join(DATASETS)}")
    if not bits or any(not is_int(b) or not 1 <= b <= 8
                       for b in bits):
        raise InputError(f"bits must be a non-empty list of integers in 1..8, got {bits!r}")
    if isinstance(methods, str) or not methods or any(m not in ALL_METHODS for m in methods):
        raise InputError(f"methods must be a non-empty list from {', '.join(ALL_METHODS)}, got {methods!r}")
    check_choice("scale", scale, SCALES)
    check_int("seed", seed, 0)
    return list(dict.fromkeys(datasets)), sorted({int(b) for b in bits}), list(dict.fromkeys(methods))


def check_models(datasets, models_dir=None):
    """Load every float model and feature net the sweep of ``datasets`` needs, so that a missing, corrupt or
    mismatched file fails before any work (FormatError naming the file and the command that rebuilds it)."""
    from .datasets import data_shape, has_labels
    for name in datasets:
        load_shipped_model(name, models_dir)
        if has_labels(name):
            load_feature_net(name, models_dir, data_shape(name))


def _run_dataset(out_dir, name, bits, methods, cfg, seed, progress, results, models_dir, spread=None):
    """Measure one dataset; its results go into ``results["datasets"][name]`` (and ``results.json``) as they
    come, the FD statistics when the dataset is done (or interrupted). ``spread``: see :func:`_measured`."""
    from . import images
    from .reproduce_report import dataset_statistics, write_json
    folder = os.path.join(out_dir, name)
    os.makedirs(folder, exist_ok=True)
    t0 = time.perf_counter()
    if name in STANDINS:
        cfg = dict(cfg, **cfg["standins"])
    model, meta, model_file = load_shipped_model(name, models_dir)
    ev = Evaluator(name, model, cfg, seed, progress, models_dir)
    jobs = [(m, b, len(ev.x0) if b in cfg["headline_bits"] else 1) for m in methods for b in bits]
    if spread is not None and any(base_row(method) in CALIBRATED for method, _, _ in jobs):
        ev.calibration()                          # once, here, rather than once per worker
    tasks = ([PAPER_TASK] if ev.n_paper else []) + jobs    # the longest first, so that it does not finish last
    entry = dict(paper_dataset=PAPER_NAMES[name][0], model_file=recorded_path(model_file, models_dir),
                 model_sha256=model_digest(model),
                 recipe=meta.get("recipe"),
                 trained_steps=meta.get("trained_steps"), train_seconds=meta.get("seconds"),
                 parameters=int(sum(p.size for p in model.parameters().values())), model_config=model.config(),
                 solver=ev.solver, solver_steps=ev.steps, n_samples=ev.n, seeds=len(ev.x0),
                 headline_bits=[b for b in cfg["headline_bits"] if b in bits], feature_net=ev.feature_info,
                 likelihood_float=ev.likelihood_row(ev.bpd_float),
                 fd_floor=ev.floor, fd_noise=ev.fd_noise, latent_float=ev.latent_float, paper_sampler=None,
                 runs=[])
    results["datasets"][name] = entry
    images.save_samples_png(os.path.join(folder, "real.png"), ev.real[:64])
    images.save_samples_png(os.path.join(folder, "samples_float.png"), ev.float_samples[0][:64])
    rows = {}                # task index -> row; entry["runs"] keeps them in the order of jobs
    try:
        for i, result in _measured(ev, tasks, spread):
            if tasks[i] == PAPER_TASK:
                ev.paper_features, ev.paper_info = result
                entry["paper_sampler"] = ev.paper_info
                continue
            method, b, _ = tasks[i]
            row, samples, features = result
            ev.features.update(features)
            rows[i] = row
            entry["runs"] = [rows[k] for k in sorted(rows)]
            write_json(os.path.join(out_dir, "results.json"), results)
            _say(progress, f"  {name} {method:7s} {b}-bit ({len(rows)}/{len(jobs)}): "
                           f"psnr {row['psnr']:.2f} dB, ssim {row['ssim']:.3f}, drift {row['drift']:.3g}")
            if b in (2, 3):
                images.save_samples_png(os.path.join(folder, f"samples_{method}_{b}bit.png"), samples[:64])
    finally:
        if ev.has_fd:
            _say(progress, f"  {name}: bootstrap intervals ({cfg['n_boot']} replicates)")
            dataset_statistics(entry, ev, cfg["n_boot"], seed)
        entry["calibration"] = ev.calibration_info
        entry["seconds"] = time.perf_counter() - t0
        write_json(os.path.join(out_dir, "results.json"), results)   # the finished dataset, before the next one


def _measured(ev, tasks, spread):
    """``(index, Evaluator.run_task's result)`` for each of ``tasks``: in their order when measured here (``spread``
    None), else as they finish, one task each on a ``distributed.Client``'s cluster or in a pool of ``spread`` (an
    int) local processes. The evaluator, with its float samples and, if a row needs it, its calibration, is sent
    to every worker once; results are those of a serial run to float32 rounding (a process with another thread
    count or memory alignment can change the last digits of a sum)."""
    if spread is None:
        for i, task in enumerate(tasks):
            yield i, ev.run_task(task)
        return
    yield from (_in_processes if isinstance(spread, int) else _on_cluster)(ev, tasks, spread)


def _on_cluster(ev, tasks, client):
    """:func:`_measured` as Dask tasks; the tasks not yet done are cancelled when the caller stops early."""
    from distributed import as_completed
    remote = client.scatter(ev, broadcast=True)
    futures = [client.submit(Evaluator.run_task, remote, task, pure=False) for task in tasks]
    index = {future.key: i for i, future in enumerate(futures)}
    try:
        for future in as_completed(futures):
            yield index[future.key], future.result()
    finally:
        client.cancel(futures)


def _in_processes(ev, tasks, workers):
    """:func:`_measured` in ``workers`` spawned processes, each holding a copy of ``ev`` and using its share of the
    CPUs (:func:`fmq_np._workers.worker_environment`); they are stopped at once when the caller stops early
    (Ctrl-C, an error)."""
    import multiprocessing
    from ._workers import worker_environment
    with worker_environment(workers):
        pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_hold_evaluator, initargs=(ev,))
    try:
        yield from pool.imap_unordered(_run_held, enumerate(tasks))
        pool.close()
    finally:
        pool.terminate()
        pool.join()


_HELD = {}


def _hold_evaluator(ev):
    """Initializer of a local worker process: keep its copy of the evaluator."""
    _HELD["ev"] = ev


def _run_held(indexed_task):
    """``(index, Evaluator.run_task(task))`` on the worker's evaluator."""
    i, task = indexed_task
    return i, _HELD["ev"].run_task(task)


def load_shipped_model(name, models_dir=None):
    """The shipped float U-Net of dataset ``name``, checked against its recipe: ``(model, meta, path)``.

    Raises FormatError naming the file when it is missing, corrupt, of another class, or trained with other
    settings than :mod:`fmq_np.recipes` says (with the command that retrains it)."""
    from . import io, recipes
    path = _model_file(name, models_dir)
    retrain = f"retrain it with: python benchmarks/train_models.py {name}"
    try:
        model, meta = io.load_model(path)
    except FmqError as exc:
        raise FormatError(f"{exc} ({retrain})") from None
    dataset, settings = recipes.recipe(name)
    if type(model).__name__ != "UNetVelocity":
        raise FormatError(f"{path}: holds a {type(model).__name__}, not the UNetVelocity of recipe {name!r}; {retrain}")
    if meta.get("dataset") != dataset or meta.get("recipe") != settings or \
            meta.get("trained_steps") != recipes.total_steps(settings):
        raise FormatError(f"{path}: trained with other settings than recipe {name!r} (dataset "
                          f"{meta.get('dataset')!r}, {meta.get('trained_steps')} steps); {retrain}")
    return model, meta, path


def load_feature_net(name, models_dir=None, shape=None):
    """The shipped FD classifier of dataset ``name``: ``(net, meta, path)``; FormatError naming the file when it is
    missing, corrupt, not a Classifier, or made for images of another shape than ``shape`` (C, H, W)."""
    from . import io
    path = _model_file(f"features_{name}", models_dir)
    retrain = f"retrain it with: python benchmarks/train_models.py features_{name}"
    try:
        net, meta = io.load_model(path)
    except FmqError as exc:
        raise FormatError(f"{exc} ({retrain})") from None
    if type(net).__name__ != "Classifier":
        raise FormatError(f"{path}: holds a {type(net).__name__}, not a Classifier; {retrain}")
    cfg = net.config()
    if shape is not None and (cfg["channels"], cfg["size"], cfg["size"]) != tuple(shape):
        raise FormatError(f"{path}: feature net is for {cfg['channels']}×{cfg['size']}×{cfg['size']} images, "
                          f"{name} has {'×'.join(map(str, shape))}; {retrain}")
    return net, meta, path


def recorded_path(path, models_dir):
    """How ``results.json`` names a model file: a shipped one as ``data/models/<file>`` (the same on every machine
    and install), one from ``--models-dir`` as given."""
    return f"data/models/{os.path.basename(path)}" if models_dir is None else path


def _model_file(stem, models_dir):
    from . import datasets
    if models_dir is None:
        return datasets.model_path(stem)
    path = os.path.join(models_dir, f"{stem}.h5")
    if not os.path.isfile(path):
        raise FormatError(f"{path}: shipped model missing (train it with: python benchmarks/train_models.py {stem})")
    return path


class Evaluator:
    """Everything the measurements of one dataset share: the float model's velocities and samples per noise
    seed, the real images, the feature network and its reference features."""

    def __init__(self, name, model, cfg, seed, progress, models_dir=None):
        from . import datasets, flow
        from .eval import image_features
        from .eval.fd_stats import fd_floor
        self.name, self.model, self.progress = name, model, progress
        self.solver = PAPER_NAMES[name][1]
        if self.solver == "dopri5":
            self.solver = "heun2"      # the default sampler is fixed-step; dopri5 only in the paper check
        self.steps = PAPER_STEPS[self.solver] if cfg["steps"] == "paper" else cfg["steps"]
        self.has_fd = datasets.has_labels(name)
        split = "test" if self.has_fd else "train"
        test = datasets.load(name, split=split)
        self.n = n = min(cfg["n_samples"], len(test))
        self.real = test[np.random.default_rng(seed + 1).permutation(len(test))[:n]]
        self.x_velocity = self.real[:min(cfg["n_velocity"], n)]
        self.v_float = self._velocity(model)
        self.latent_float = self._latent(model)
        self.x_likelihood = self.real[:cfg["n_likelihood"]]
        self.seed = seed
        self.bpd_float = self._bits_per_dim(model)
        self.x0 = [flow.noise(model, n, seed=seed + 1000 * (k + 1)) for k in range(cfg["seeds"])]
        self.n_paper = min(cfg["paper_check"], n) if self.has_fd else 0    # its FD needs the feature net
        _say(progress, f"  sampling {len(self.x0)} × {n} images from the float model ({self.solver}, "
                       f"{self.steps} steps)")
        self.float_samples = [self._sample(model, x0) for x0 in self.x0]
        self.calib_n, self._calibration, self.calibration_info = cfg["calib_n"], None, None
        self._tuned = {}           # (method, bits) -> tuned QuantizedModel: a +qat row starts from its +tune row
        self.tune_n, self.tune_iters, self.tune_lr = cfg["tune_n"], cfg["tune_iters"], cfg["tune_lr"]
        self.features = {}           # (name, seed index) -> features of that sample set, for the FD statistics
        self.feature_info, self.floor, self.fd_noise = None, None, None
        self.paper_features, self.paper_info = None, None
        if not self.has_fd:
            return
        self.net, meta, path = load_feature_net(name, models_dir, test.shape[1:])
        self.feature_info = dict(file=recorded_path(path, models_dir), test_accuracy=meta.get("test_accuracy"),
                                 features=int(meta.get("features", 0)), recipe=meta.get("recipe"))
        self.ref_features = image_features(self.net, test)
        train = datasets.load(name)
        self.floor = fd_floor(image_features(self.net, train), self.ref_features, n, seed=seed + 2)
        noise = np.clip(np.random.default_rng(seed + 3).standard_normal((n,) + test.shape[1:]), -1, 1)
        self.fd_noise = _fd(image_features(self.net, noise), self.ref_features)
        for k, s in enumerate(self.float_samples):
            self.features["float", k] = image_features(self.net, s)
        _say(progress, f"  float FD {_fd(self.features['float', 0], self.ref_features):.4g}; real-data floor "
                       f"{self.floor['mean']:.4g} ± {self.floor['std']:.2g}; noise {self.fd_noise:.4g}")

    def paper_check(self):
        """The float model sampled from the first ``n_paper`` noise vectors of the first draw with the paper's own
        solver settings: ``(features, info)``, to be kept in ``paper_features`` (apart from ``features``: another
        n) and ``paper_info`` by the caller (it may run on a worker's copy of the evaluator)."""
        from . import flow
        from .eval import image_features
        solver = PAPER_NAMES[self.name][1]
        steps = PAPER_STEPS[solver]
        _say(self.progress, f"  sampling {self.n_paper} images with the paper's sampler ({solver}"
                            + (f", tolerance {PAPER_TOLERANCE:g})" if solver == "dopri5" else f", {steps} steps)"))
        t0 = time.perf_counter()
        samples = flow.sample(self.model, x0=self.x0[0][:self.n_paper], solver=solver, steps=steps,
                              atol=PAPER_TOLERANCE, rtol=PAPER_TOLERANCE, progress=False)
        return image_features(self.net, samples), dict(
            solver=solver, steps=steps, seconds=time.perf_counter() - t0, n_samples=self.n_paper,
            tolerance=PAPER_TOLERANCE if solver == "dopri5" else None)

    def _bits_per_dim(self, model):
        """Bits/dim (n_likelihood,) of the likelihood images under ``model`` (same probes for every model), or None."""
        from . import flow
        if len(self.x_likelihood) == 0:
            return None
        res = flow.log_likelihood(model, self.x_likelihood, method="hutchinson", solver=self.solver,
                                  steps=2 * self.steps, seed=self.seed + 5, levels=256, progress=False)
        return res.bits_per_dim

    def likelihood_row(self, bpd):
        """``{bits_per_dim, minus_float, ci_minus_float, n}``: mean bits/dim and the paired difference to the
        float model (:func:`fmq_np.eval.paired_difference`), or None."""
        from .eval import paired_difference
        if bpd is None:
            return None
        d = paired_difference(self.bpd_float, bpd)
        return dict(bits_per_dim=d["mean"], minus_float=d["minus"], ci_minus_float=d["ci_minus"], n=d["n"])

    def _latent(self, model):
        """The paper's latent stability: PCA of the encoder + middle-block features at t = 0 on the real images."""
        from .eval import latent_stability
        return latent_stability(model.latent(self.real, np.zeros(len(self.real), np.float32)))

    def _velocity(self, model):
        """The paper's probe: velocity at t = 0 on real images (n, C, H, W)."""
        return model(self.x_velocity, np.zeros(len(self.x_velocity), np.float32))

    def _sample(self, model, x0):
        from . import flow
        return flow.sample(model, x0=x0, solver=self.solver, steps=self.steps, progress=False)

    def calibration(self):
        """The float model's :class:`~fmq_np.quant.calibrate.Calibration` (computed at the first call): ``calib_n``
        trajectories of the default sampler plus training-path pairs; ``calibration_info`` records its settings."""
        from . import datasets, quant
        if self._calibration is None:
            _say(self.progress, f"  calibrating on {self.calib_n} trajectories ({self.solver}, {self.steps} steps)")
            t0 = time.perf_counter()
            # sensitivities (used only by mixed widths, which the sweep's integer bits never are): one width, few states
            self._calibration = quant.calibrate(self.model, datasets.load(self.name), n=self.calib_n,
                                                solver=self.solver, steps=self.steps, seed=self.seed + 7,
                                                widths=(2,), sens_states=16)
            self.calibration_info = dict(self._calibration.meta, seconds=time.perf_counter() - t0)
        return self._calibration

    def quantize(self, method, bits):
        """The :class:`~fmq_np.quant.model.QuantizedModel` of the float weights for a row of the sweep."""
        cal = self.calibration() if base_row(method) in CALIBRATED else None
        return quantize_row(self.model.parameters(), method, bits, cal, tune=self.tune, tuned=self._tuned)

    def tune(self, qm, codes="fixed"):
        """``qm`` with its codebooks tuned along the float model's flow (:func:`fmq_np.quant.tune.tune_codebooks`:
        ``tune_n`` trajectories of the default sampler plus training-path pairs, ``tune_iters`` steps at
        ``tune_lr``; with ``codes="free"`` half as many steps, the codes free to change)."""
        from . import datasets
        from .quant.tune import tune_codebooks
        iters = self.tune_iters if codes == "fixed" else max(1, self.tune_iters // 2)
        return tune_codebooks(self.model, qm, datasets.load(self.name), n=self.tune_n, solver=self.solver,
                              steps=self.steps, seed=self.seed + 11, iters=iters, lr=self.tune_lr, codes=codes)

    def run_task(self, task):
        """One task of a dataset's sweep: :data:`PAPER_TASK` → :meth:`paper_check`, a ``(method, bits, seeds)`` row
        → :meth:`measure`."""
        return self.paper_check() if task == PAPER_TASK else self.measure(*task)

    def measure(self, method, bits, seeds=1):
        """Quantize with ``method`` at ``bits`` and measure on the first ``seeds`` noise draws; returns
        ``(row dict, samples of the first draw, {(set name, draw index): features})``; the caller adds the features
        to :attr:`features` (so that a copy of the evaluator on a Dask worker can measure too). The row's FD
        statistics are added by the report module."""
        from . import nn
        from .eval import image_features, velocity_fidelity
        params = self.model.parameters()
        qm = self.quantize(method, bits)
        qmodel = nn.UNetVelocity(**self.model.config())
        qmodel.load_parameters(qm.dequantize())
        sizes = [int(np.prod(r["shape"])) for r in qm.report]
        mse = sum(r["mse"] * k for r, k in zip(qm.report, sizes)) / sum(sizes)
        fidelity = velocity_fidelity(self.v_float, self._velocity(qmodel))
        samples = [self._sample(qmodel, x0) for x0 in self.x0[:seeds]]
        drift = float(np.sqrt(np.mean((samples[0].astype(np.float64) - self.float_samples[0]) ** 2)))
        features = {(f"{method}@{bits}", k): image_features(self.net, s) for k, s in enumerate(samples)} \
            if self.has_fd else {}
        row = dict(method=method, bits=bits, weight_mse=mse,
                   bits_per_weight=qm.bits_per_weight,
                   predicted_mse=_predicted_mse(params, qm.report, sizes, method, bits), psnr=fidelity["psnr"],
                   ssim=fidelity["ssim"], drift=drift, latent=self._latent(qmodel), seeds=seeds,
                   likelihood=self.likelihood_row(self._bits_per_dim(qmodel)),
                   kept_float=sum(1 for r in qm.report if r["skipped"]), tensors=len(qm.report))
        if "tuned" in qm.meta:
            row["tuned"] = qm.meta["tuned"]
        return row, samples[0], features


def base_row(method):
    """The untuned row a method of the sweep starts from: ``method`` itself unless it is tuned (:data:`TUNED`)."""
    while method in TUNED:
        method = TUNED[method][0]
    return method


def quantize_row(params, method, bits, calibration=None, tune=None, tuned=None):
    """Quantize named arrays ``params`` as a row ``method`` of the sweep does (a name of :data:`ALL_METHODS`):
    the paper's four with ``paper_compat=True``, ``ot-opt`` on every tensor (the paper's tensors, no size skip), a
    calibrated method (:data:`CALIBRATED`) with ``calibration`` (a :class:`~fmq_np.quant.calibrate.Calibration`
    of the model the arrays come from), a tuned method (:data:`TUNED`) as its base row passed through ``tune``
    (``(QuantizedModel, codes) -> QuantizedModel``, e.g. :meth:`Evaluator.tune`); ``tuned``: an optional dict
    ``(method, bits) -> QuantizedModel`` of tuned rows made already, read and filled (a ``+qat`` row then reuses its
    ``+tune`` row instead of tuning it again). Returns the :class:`~fmq_np.quant.model.QuantizedModel`."""
    from . import quant
    from .quant.calibrate import quantize_calibrated
    if method in TUNED:
        if tune is None:
            raise InputError(f"method {method!r} needs a tuning step (fmq_np.quant.tune.tune_codebooks)")
        if tuned is not None and (method, bits) in tuned:
            return tuned[method, bits]
        base, codes = TUNED[method]
        qm = tune(quantize_row(params, base, bits, calibration, tune, tuned), codes)
        if tuned is not None:
            tuned[method, bits] = qm
        return qm
    if method in CALIBRATED:
        if calibration is None:
            raise InputError(f"method {method!r} needs a calibration (fmq_np.quant.calibrate)")
        base, options = CALIBRATED[method]
        return quantize_calibrated(params, bits=bits, method=base, calibration=calibration, **options)
    check_choice("method", method, ALL_METHODS)     # calibrated and tuned methods returned above: this leaves METHODS
    if method == "ot-opt":       # our method, on the same tensors as the paper's (every tensor)
        return quant.quantize_model(params, bits=bits, method=method, policy=lambda name, array: bits)
    return quant.quantize_model(params, bits=bits, method=method, paper_compat=True)


def _fd(features, ref):
    from .eval import frechet_distance
    return frechet_distance(features, ref)


def _predicted_mse(params, report, sizes, method, bits):
    """The theory's weight-level prediction (:func:`fmq_np.theory.weights.predicted_mse`, per channel) of the mean
    squared weight error over all parameters, tensors kept in float counting 0; None for log2 (no prediction)."""
    from .theory.weights import PREDICTABLE, predicted_mse
    if method not in PREDICTABLE:
        return None
    total = sum(predicted_mse(params[r["name"]], bits, method, "channel") * k
                for r, k in zip(report, sizes) if r["bits"] is not None and not r["skipped"])
    return total / sum(sizes)


def _jsonable(cfg):
    return {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}


def _say(enabled, line):
    if enabled:
        print(line, file=sys.stderr, flush=True)
