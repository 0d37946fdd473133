"""Compose one demo image: background, 1-20 overlapping shapes, photometric noise.

Annotation rules (the data set's documented choices):

* Objects are painted in z-order, larger ones mostly underneath. An object
  whose visible part is under 40 % of its area (occluded > 60 %) or under
  8 pixels gets no annotation.
* The bbox is the tight box around the object's *visible* pixels (alpha >=
  0.5 after anti-aliasing), as COCO's boxes follow the visible instance mask;
  ``area`` is the visible pixel count. Boxes are in pixel-edge coordinates:
  a box covering pixels x0..x1 has ``x = x0`` and ``w = x1 - x0 + 1``.
* Objects always lie fully inside the image, so boxes never need clipping.
"""
import cv2
import numpy as np

from .demo_background import make_background, random_colour
from .demo_shapes import SHAPE_BUILDERS

SHAPE_CLASSES: tuple[str, ...] = tuple(SHAPE_BUILDERS)
MAX_OBJECTS = 20
MIN_VISIBLE_FRACTION = 0.4
MIN_VISIBLE_PIXELS = 8
_SUBPIXEL_BITS = 4  # cv2 fixed-point shift: polygons drawn with 1/16 px precision


def _sample_size(rng: np.random.Generator, img_size: int) -> float:
    """Object scale in px: log-normal around 13 % of the image, 8 px .. half the image."""
    size = np.exp(rng.normal(np.log(0.13 * img_size), 0.6))
    return float(np.clip(size, max(8.0, 0.025 * img_size), 0.5 * img_size))


def _place(rng: np.random.Generator, fills: list[np.ndarray],
           holes: list[np.ndarray], rotation: float, scale: float,
           img_size: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Rotate, scale and translate unit polygons to a random spot fully inside the image."""
    theta = np.deg2rad(rotation)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    fills = [p @ rot.T * scale for p in fills]
    holes = [p @ rot.T * scale for p in holes]
    allpts = np.concatenate(fills)
    lo, hi = allpts.min(axis=0), allpts.max(axis=0)
    # Keep one pixel of margin so anti-aliased edges stay inside too.
    low = 1.0 - lo
    high = np.maximum(low, img_size - 1.0 - hi)
    shift = rng.uniform(low, high)
    return [p + shift for p in fills], [p + shift for p in holes]


def _to_fixed(polys: list[np.ndarray], x0: int, y0: int) -> list[np.ndarray]:
    """Polygons relative to (x0, y0) in cv2's fixed-point subpixel format."""
    return [np.round((p - (x0, y0)) * (1 << _SUBPIXEL_BITS)).astype(np.int32) for p in polys]


def _object_alpha(fills: list[np.ndarray], holes: list[np.ndarray],
                  img_size: int) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """Anti-aliased coverage (uint8) of the shape inside its bounding region."""
    allpts = np.concatenate(fills)
    x0, y0 = np.maximum(np.floor(allpts.min(axis=0)).astype(int) - 1, 0)
    x1, y1 = np.minimum(np.ceil(allpts.max(axis=0)).astype(int) + 2, img_size)
    alpha = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(alpha, _to_fixed(fills, x0, y0), 255, cv2.LINE_AA, _SUBPIXEL_BITS)
    if holes:
        cv2.fillPoly(alpha, _to_fixed(holes, x0, y0), 0, cv2.LINE_AA, _SUBPIXEL_BITS)
    return (int(x0), int(y0), int(x1), int(y1)), alpha


def _contrasting_colour(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """Random colour, re-drawn a few times to stand out from the pixels beneath."""
    mean = under.reshape(-1, 3).mean(axis=0)
    best, best_dist = None, -1.0
    for _ in range(6):
        colour = np.array(random_colour(rng), np.float32)
        dist = float(np.linalg.norm(colour - mean))
        if dist > best_dist:
            best, best_dist = colour, dist
        if dist > 90.0:
            break
    return best


def _paint(rng: np.random.Generator, canvas: np.ndarray,
           box: tuple[int, int, int, int], alpha_u8: np.ndarray,
           fills: list[np.ndarray]) -> None:
    """Blend a shaded, optionally outlined object into the float canvas in place."""
    x0, y0, x1, y1 = box
    region = canvas[y0:y1, x0:x1]
    alpha = alpha_u8.astype(np.float32)[..., None] / 255.0
    colour = _contrasting_colour(rng, region[alpha_u8 >= 128] if (alpha_u8 >= 128).any()
                                 else region)
    # A linear shading across the object, as if lit from one side.
    h, w = alpha_u8.shape
    angle = rng.uniform(0, 2 * np.pi)
    ramp = ((np.arange(w)[None, :] / max(w, 1) - 0.5) * np.cos(angle)
            + (np.arange(h)[:, None] / max(h, 1) - 0.5) * np.sin(angle))
    shade = 1.0 + rng.uniform(0.0, 0.5) * ramp[..., None]
    region[:] = region * (1.0 - alpha) + (colour * shade) * alpha
    if rng.random() < 0.25:  # dark or light outline
        edge = np.zeros_like(alpha_u8)
        cv2.polylines(edge, _to_fixed(fills, x0, y0), True, 255, 1, cv2.LINE_AA, _SUBPIXEL_BITS)
        edge_a = (edge.astype(np.float32) / 255.0)[..., None] * alpha
        tone = colour * (0.35 if rng.random() < 0.7 else 1.6)
        region[:] = region * (1.0 - edge_a) + np.clip(tone, 0, 255) * edge_a


def _photometric(rng: np.random.Generator, canvas: np.ndarray) -> np.ndarray:
    """Global colour/brightness/contrast jitter, optional blur, sensor noise -> uint8."""
    img = (canvas - 128.0) * rng.uniform(0.75, 1.2) + 128.0 + rng.uniform(-25, 25)
    img = img * rng.uniform(0.9, 1.1, 3).astype(np.float32)
    if rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.4, 1.1)))
    sigma = rng.uniform(0.0, 7.0)
    img = img + rng.standard_normal(img.shape, dtype=np.float32) * sigma
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def _foreground_lines(rng: np.random.Generator, canvas: np.ndarray) -> None:
    """Occasionally cross the scene with 1-2 thin lines (not counted as occlusion)."""
    if rng.random() >= 0.25:
        return
    size = canvas.shape[0]
    for _ in range(int(rng.integers(1, 3))):
        p0, p1 = rng.integers(0, size, (2, 2))
        cv2.line(canvas, tuple(int(v) for v in p0), tuple(int(v) for v in p1),
                 random_colour(rng), 1, cv2.LINE_AA)


def render_scene(rng: np.random.Generator, img_size: int) -> tuple[np.ndarray, list[dict]]:
    """One image (uint8 BGR) and its objects as dicts(category_index, bbox[x,y,w,h], area)."""
    canvas = make_background(rng, img_size).astype(np.float32)
    num = int(np.clip(np.floor(rng.triangular(1, 6, MAX_OBJECTS + 1)), 1, MAX_OBJECTS))
    objects = []
    for _ in range(num):
        cls = int(rng.integers(len(SHAPE_CLASSES)))
        fills, holes, rotation = SHAPE_BUILDERS[SHAPE_CLASSES[cls]](rng)
        scale = _sample_size(rng, img_size)
        fills, holes = _place(rng, fills, holes, rotation, scale, img_size)
        objects.append((cls, scale, fills, holes))
    # Larger objects mostly go underneath so that small ones stay visible.
    order = np.argsort(-np.array([o[1] for o in objects]) * rng.lognormal(0, 0.5, num),
                       kind='stable')
    label_map = np.full((img_size, img_size), -1, np.int16)
    drawn = []
    for z, idx in enumerate(order):
        cls, _, fills, holes = objects[idx]
        box, alpha = _object_alpha(fills, holes, img_size)
        _paint(rng, canvas, box, alpha, fills)
        x0, y0, x1, y1 = box
        label_map[y0:y1, x0:x1][alpha >= 128] = z
        drawn.append((cls, box, int((alpha >= 128).sum())))
    _foreground_lines(rng, canvas)
    image = _photometric(rng, canvas)
    annotations = []
    for z, (cls, (x0, y0, x1, y1), full_area) in enumerate(drawn):
        visible = label_map[y0:y1, x0:x1] == z
        count = int(visible.sum())
        if count < MIN_VISIBLE_PIXELS or count < MIN_VISIBLE_FRACTION * full_area:
            continue
        cols = np.flatnonzero(visible.any(axis=0))
        rows = np.flatnonzero(visible.any(axis=1))
        bbox = [float(x0 + cols[0]), float(y0 + rows[0]),
                float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1)]
        annotations.append(dict(category_index=cls, bbox=bbox, area=float(count)))
    return image, annotations
