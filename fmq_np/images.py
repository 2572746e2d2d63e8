"""Pictures of samples as PNG files, with no plotting library: image grids and 2-D point-density maps."""
import struct
import zlib

import numpy as np

from ._atomic import atomic_path
from .errors import InputError


def write_png(path, pixels):
    """Write ``pixels`` — uint8 (H, W) grey or (H, W, 3) RGB — as a PNG file (atomic)."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    if pixels.ndim == 2:
        colour_type, rows = 0, pixels
    elif pixels.ndim == 3 and pixels.shape[2] == 3:
        colour_type, rows = 2, pixels.reshape(pixels.shape[0], -1)
    else:
        raise InputError(f"write_png: pixels must be (H, W) or (H, W, 3), got {pixels.shape}")
    height, width = pixels.shape[:2]
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()   # filter type 0 per row

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(png)


def image_grid(images, columns=None, scale=1, pad=1):
    """Tile images (n, C, H, W) with values in [−1, 1] into one uint8 picture (grey for C = 1, RGB for C = 3).

    Each image is enlarged ``scale`` times (nearest neighbour) and separated by ``pad`` pixels.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise InputError(f"image_grid: expected (n, 1 or 3, H, W), got {images.shape}")
    n, c, h, w = images.shape
    columns = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / columns))
    pix = np.clip((images.astype(np.float64) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    pix = pix.repeat(scale, axis=2).repeat(scale, axis=3)
    hs, ws = h * scale + pad, w * scale + pad
    canvas = np.full((c, rows * hs + pad, columns * ws + pad), 255, np.uint8)
    for i in range(n):
        r, k = divmod(i, columns)
        canvas[:, pad + r * hs: pad + r * hs + h * scale, pad + k * ws: pad + k * ws + w * scale] = pix[i]
    return canvas[0] if c == 1 else canvas.transpose(1, 2, 0)


def density_map(points, size=256, extent=None):
    """A 2-D histogram of points (n, 2) as a uint8 (size, size) picture: dark where points are dense.

    ``extent``: (xmin, xmax, ymin, ymax); default the points' range with a 5 % margin. y points up.
    """
    points = np.asarray(points, np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise InputError(f"density_map: expected (n, 2) points, got {points.shape}")
    if extent is None:
        lo, hi = points.min(0), points.max(0)
        margin = 0.05 * np.maximum(hi - lo, 1e-9)
        extent = (lo[0] - margin[0], hi[0] + margin[0], lo[1] - margin[1], hi[1] + margin[1])
    counts, _, _ = np.histogram2d(points[:, 1], points[:, 0], bins=size, range=[extent[2:], extent[:2]])
    level = np.log1p(counts) / max(np.log1p(counts).max(), 1e-12)
    return (255 * (1.0 - level[::-1])).astype(np.uint8)


def save_samples_png(path, samples, scale=None):
    """Save samples as a PNG: an image grid for (n, C, H, W), a density map for (n, 2) points."""
    samples = np.asarray(samples)
    if samples.ndim == 2 and samples.shape[1] == 2:
        write_png(path, density_map(samples))
    elif samples.ndim == 4:
        scale = scale or max(1, 64 // samples.shape[-1])
        write_png(path, image_grid(samples, scale=scale))
    else:
        raise InputError(f"cannot draw samples of shape {samples.shape} (need (n, 2) or (n, C, H, W))")
