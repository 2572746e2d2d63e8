"""Evaluation metrics for generated samples and quantized networks."""
from .compare import compare, likelihood_pair, paired_difference, unit_range, velocity_fidelity
from .metrics import (frechet_distance, image_features, image_frechet_distance, latent_stability, mmd, psnr,
                      sliced_w2, ssim, train_feature_net, w2_1d)

__all__ = ["sliced_w2", "w2_1d", "psnr", "ssim", "frechet_distance", "train_feature_net", "image_features",
           "image_frechet_distance", "latent_stability", "mmd", "compare", "velocity_fidelity", "unit_range",
           "likelihood_pair", "paired_difference"]
