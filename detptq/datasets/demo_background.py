"""Cluttered, textured backgrounds for the demo data set.

A background is a colour gradient, low-frequency colour clouds, one optional
texture (grain, stripes or mottling) and a few distractors: thin lines, arcs,
scribbles and irregular blobs. Distractors are chosen so that none looks like
a class: lines and arcs are thin and open, blobs are lumpy.
"""
from functools import lru_cache

import cv2
import numpy as np


@lru_cache(maxsize=4)
def _unit_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [0, 1), cached per image size."""
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    return np.meshgrid(coords, coords)


def smooth_noise(rng: np.random.Generator, cells: int, size: int,
                 channels: int = 1) -> np.ndarray:
    """Zero-mean noise with about ``cells`` bumps per side, upsampled to ``size`` px."""
    grid = rng.standard_normal((cells, cells, channels), dtype=np.float32)
    out = cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
    return out.reshape(size, size, channels)


def random_colour(rng: np.random.Generator) -> tuple[float, float, float]:
    """Uniform BGR colour."""
    return tuple(float(c) for c in rng.uniform(0.0, 255.0, 3))


def _texture(rng: np.random.Generator, size: int) -> np.ndarray | float:
    """One of: nothing, grey grain, stripes, mottling (added to the base)."""
    kind = int(rng.integers(0, 4))
    if kind == 1:  # grain
        return rng.standard_normal((size, size, 1), dtype=np.float32) * rng.uniform(4, 12)
    if kind == 2:  # stripes at a random angle and frequency
        xx, yy = _unit_grid(size)
        angle = rng.uniform(0.0, np.pi)
        freq = rng.uniform(6.0, 28.0)
        wave = np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)))
        return (wave * rng.uniform(6, 20))[..., None].astype(np.float32)
    if kind == 3:  # mottling: medium-frequency colour noise
        cells = int(rng.integers(16, 40))
        return smooth_noise(rng, cells, size, 3) * rng.uniform(6, 18)
    return 0.0


def _blob_mask(rng: np.random.Generator, extent: int) -> np.ndarray:
    """Lumpy irregular region: thresholded smooth noise."""
    noise = smooth_noise(rng, 4, extent)[..., 0]
    xx, yy = np.meshgrid(np.linspace(-1, 1, extent), np.linspace(-1, 1, extent))
    # Fade out toward the border so the blob stays inside its square.
    field = noise - 1.5 * (xx ** 2 + yy ** 2)
    return field > -0.4


def _draw_distractor(rng: np.random.Generator, img: np.ndarray) -> None:
    """Draw one thin line, open arc, scribble or lumpy blob onto img in place."""
    size = img.shape[0]
    colour = random_colour(rng)
    thickness = int(rng.integers(1, 4))
    kind = int(rng.integers(0, 4))
    if kind == 0:
        p0, p1 = rng.integers(0, size, (2, 2))
        cv2.line(img, tuple(int(v) for v in p0), tuple(int(v) for v in p1),
                 colour, thickness, cv2.LINE_AA)
    elif kind == 1:
        centre = tuple(int(v) for v in rng.integers(0, size, 2))
        axes = tuple(int(v) for v in rng.integers(size // 20 + 2, size // 2, 2))
        start = float(rng.uniform(0, 360))
        # Open arcs only (< 180 degrees), so they never read as a ring.
        cv2.ellipse(img, centre, axes, float(rng.uniform(0, 180)), start,
                    start + float(rng.uniform(30, 170)), colour, thickness,
                    cv2.LINE_AA)
    elif kind == 2:
        start = rng.uniform(0, size, 2)
        steps = rng.normal(0, size / 8, (int(rng.integers(3, 8)), 2))
        pts = np.clip(start + np.cumsum(steps, axis=0), 0, size - 1)
        cv2.polylines(img, [pts.astype(np.int32)], False, colour, thickness,
                      cv2.LINE_AA)
    else:
        extent = int(rng.integers(max(6, size // 16), max(8, size // 4)))
        x0, y0 = (int(v) for v in rng.integers(0, size - extent, 2))
        mask = _blob_mask(rng, extent)
        region = img[y0:y0 + extent, x0:x0 + extent]
        alpha = rng.uniform(0.4, 0.9)
        region[mask] = (region[mask] * (1 - alpha)
                        + np.array(colour) * alpha).astype(np.uint8)


def make_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Random cluttered background, uint8 BGR of shape (size, size, 3)."""
    xx, yy = _unit_grid(size)
    angle = rng.uniform(0.0, 2 * np.pi)
    ramp = np.clip((xx - 0.5) * np.cos(angle) + (yy - 0.5) * np.sin(angle) + 0.5,
                   0.0, 1.0)[..., None]
    c0 = rng.uniform(0, 255, 3).astype(np.float32)
    c1 = rng.uniform(0, 255, 3).astype(np.float32)
    img = c0 + (c1 - c0) * ramp
    img = img + smooth_noise(rng, int(rng.integers(3, 9)), size, 3) * rng.uniform(8, 35)
    img = img + _texture(rng, size)
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(int(rng.poisson(4.0))):
        _draw_distractor(rng, img)
    return img
