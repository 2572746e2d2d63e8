"""Retrain the float models shipped in data/models/ (fmq_np.recipes), resumably.

    python benchmarks/train_models.py mnist fashion        # or: all
    python benchmarks/train_models.py --status

Each U-Net run checkpoints to benchmarks/checkpoints/<name>.ckpt.h5 (stage k >= 2 of a recipe with continuation
stages: <name>.ckpt.stage<k>.h5) every 250 steps (commit these to carry a run
over to another machine) and, when finished, writes data/models/<name>.h5; the FD feature nets (features_<dataset>,
minutes each) train in one go to data/models/features_<dataset>.h5. A candidate recipe (fmq_np.recipes.CANDIDATES,
named explicitly, not part of "all") writes benchmarks/checkpoints/<name>.h5 instead: it replaces no shipped
model. Ctrl-C / SIGTERM stop after the step in progress with a checkpoint; running the same command again
resumes. On 2 cores one name at a time uses both (fit splits each batch over the threads: 1.7-1.85x the
one-thread rate), or run two names at once, each with NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1.
"""
import argparse
import os
import signal
import sys

import fmq_np as fq
from fmq_np import recipes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CKPT = os.path.join(ROOT, "benchmarks", "checkpoints")
MODELS = os.path.join(ROOT, "data", "models")


def output(name):
    """Where the finished model of recipe ``name`` goes: data/models, or benchmarks/checkpoints for a candidate."""
    return os.path.join(CKPT if name in recipes.CANDIDATES else MODELS, f"{name}.h5")


def finished(name, out):
    """Whether ``out`` exists and, for a U-Net, was trained by the current recipe ``name`` (a U-Net of an older
    recipe is redone, resuming from its stage checkpoints)."""
    if not os.path.exists(out):
        return False
    return name in recipes.FEATURE_RECIPES or fq.io.load_model(out)[1].get("recipe") == recipes.recipe(name)[1]


def status():
    for name in [*recipes.RECIPES, *recipes.FEATURE_RECIPES, *recipes.CANDIDATES]:
        settings = recipes.recipe(name)[1]
        out = output(name)
        if finished(name, out):
            print(f"{name}: finished ({fq.io.load_model(out)[1].get('trained_steps')} steps) -> {out}")
            continue
        done = 0
        for k, stage in enumerate(recipes.stages(settings), start=1):
            ck = recipes.stage_checkpoint(os.path.join(CKPT, f"{name}.ckpt.h5"), k)
            if os.path.exists(ck):
                done += 0 if name in recipes.FEATURE_RECIPES else fq.io.load_model(ck)[1].get("trained_steps", 0)
        print(f"{name}: at step {done} of {recipes.total_steps(settings)}"
              + (f" (an older recipe's model is in {os.path.relpath(out, ROOT)})" if os.path.exists(out) else ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="recipes to train: "
                    f"{', '.join([*recipes.RECIPES, *recipes.FEATURE_RECIPES])} or all (the shipped models)"
                    + (f"; candidates: {', '.join(recipes.CANDIDATES)}" if recipes.CANDIDATES else ""))
    ap.add_argument("--status", action="store_true", help="print how far each model is and exit")
    args = ap.parse_args()
    if args.status or not args.names:
        return status()
    names = [*recipes.RECIPES, *recipes.FEATURE_RECIPES] if args.names == ["all"] else args.names
    for name in names:
        recipes.recipe(name)          # an unknown name fails before any training
    os.makedirs(CKPT, exist_ok=True)
    os.makedirs(MODELS, exist_ok=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)   # SIGTERM checkpoints like Ctrl-C
    for name in names:
        out = output(name)
        if finished(name, out):
            print(f"{name}: already trained -> {out}", flush=True)
            continue
        if name in recipes.FEATURE_RECIPES:
            _, meta = recipes.train_features(name, out)
            print(f"{name}: {meta['recipe']['steps']} steps in {meta['seconds']:.0f} s, test accuracy "
                  f"{meta['test_accuracy']:.2%} -> {out}", flush=True)
            continue
        _, meta = recipes.train(name, out, os.path.join(CKPT, f"{name}.ckpt.h5"))
        print(f"{name}: {meta['trained_steps']} steps in {meta['seconds']:.0f} s, loss {meta['final_loss']:.4f} "
              f"-> {out}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
