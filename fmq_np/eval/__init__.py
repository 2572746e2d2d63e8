"""Evaluation metrics for generated samples."""
from .metrics import sliced_w2, w2_1d

__all__ = ["sliced_w2", "w2_1d"]
