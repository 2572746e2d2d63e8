"""Does a shipped float model gain from more training images? One more stage on train + extra (or train alone).

    python benchmarks/extra_data_stage.py fashion [--data train+extra] [--steps 4000] [--lr 4e-4]
    python benchmarks/float_fd.py fashion --model runs/fashion-stage-train+extra.h5 --steps 4,20 --out F.json

The shipped U-Net (data/models/<name>.h5, its EMA weights) trains one continuation stage the way the recipes'
stages do (fmq_np.recipes.stages: fresh AdamW, linear decay from ``--lr``, EMA at full decay, skewed times) on its
training images, or on those plus the dataset's ``extra`` split (images the generative models are otherwise never
shown; the floor of float_fd.py stays train against test). The model goes to ``--out`` (default
runs/<name>-stage-<data>.h5) with a resumable checkpoint beside it; float_fd.py then measures it on the same
noise as the shipped model.
"""
import argparse
import os

import numpy as np

import fmq_np as fq
from fmq_np import recipes, reproduce

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def train_stage(name, data_kind, steps, lr, out, seed=None):
    model, meta, _ = reproduce.load_shipped_model(name)
    dataset, settings = recipes.recipe(name)
    data = fq.datasets.load(dataset, seed=settings["seed"])
    if data_kind == "train+extra":
        data = np.concatenate([data, fq.datasets.load(dataset, split="extra")])
    if seed is None:                  # the stages' rule (stage k: seed + k - 1): other batches than every stage
        seed = settings["seed"] + len(recipes.stages(settings))
    history = fq.flow.fit(model, data, steps=steps, batch_size=settings["batch"], lr=lr, seed=seed,
                          betas=tuple(settings["betas"]), ema_decay=settings["ema"], ema_warmup=False,
                          schedule=settings["schedule"], times=settings["times"],
                          checkpoint=os.path.splitext(out)[0] + ".ckpt.h5", checkpoint_every=250, resume=True,
                          meta={"dataset": dataset, "stage_of": name, "data": data_kind})
    tail = history.loss[-200:]
    fq.io.save_model(out, model, meta={"dataset": dataset, "recipe_name": name, "extra_stage": dict(
        data=data_kind, train_images=len(data), steps=steps, lr=lr, seed=seed, seconds=history.seconds),
        "trained_steps": meta["trained_steps"] + steps, "final_loss": float(sum(tail) / len(tail))})
    return history


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("name", choices=sorted(recipes.RECIPES), help="shipped U-Net to continue")
    ap.add_argument("--data", choices=("train+extra", "train"), default="train+extra",
                    help="training images of the stage (default train+extra)")
    ap.add_argument("--steps", type=int, default=4000, help="steps of the stage (default 4000)")
    ap.add_argument("--lr", type=float, default=4e-4, help="peak learning rate of its linear decay (default 4e-4)")
    ap.add_argument("--seed", type=int, help="seed of the stage's batches (default: the recipe's next stage seed)")
    ap.add_argument("-o", "--out", help="model file (default runs/<name>-stage-<data>.h5)")
    args = ap.parse_args()
    out = args.out or os.path.join(ROOT, "runs", f"{args.name}-stage-{args.data}.h5")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    history = train_stage(args.name, args.data, args.steps, args.lr, out, seed=args.seed)
    print(f"{args.steps} steps in {history.seconds:.0f} s -> {out}")


if __name__ == "__main__":
    main()
