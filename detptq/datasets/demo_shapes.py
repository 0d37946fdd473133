"""Unit-size geometry of the demo data set's ten shape classes.

The classes come in look-alike pairs so that a detector has to look at the
outline, not at colour or rough size:

* ``square`` / ``rectangle``  differ only in aspect ratio (<= 1.1 vs >= 1.6);
* ``disc`` / ``ring``         differ only by the hole;
* ``triangle`` / ``arrowhead``  an arrowhead is a triangle with a notch cut
  into its base;
* ``plus`` / ``x_cross``      the same cross, upright vs. turned by 45 degrees
  (their rotation is kept within +-12 degrees so the two never meet);
* ``star`` / ``hexagon``      a fat six-pointed star vs. a hexagon.

Every builder returns polygons in unit coordinates (centred on 0, largest
extent about 1 before rotation) plus the rotation in degrees to apply.
"""
from typing import Callable

import numpy as np

Polygon = np.ndarray  # (N, 2) float array of x, y
ShapeGeometry = tuple[list[Polygon], list[Polygon], float]  # fills, holes, rotation

# Enough vertices that a circle of 160 px deviates from round by < 0.2 px.
_CIRCLE_VERTICES = 64


def _circle(radius: float, squash: float = 1.0) -> Polygon:
    """Closed circle (or ellipse squashed along y) as a polygon."""
    t = np.linspace(0.0, 2.0 * np.pi, _CIRCLE_VERTICES, endpoint=False)
    return np.stack([radius * np.cos(t), radius * squash * np.sin(t)], axis=1)


def _rectangle(width: float, height: float) -> Polygon:
    """Axis-aligned rectangle centred on the origin."""
    w, h = width / 2.0, height / 2.0
    return np.array([[-w, -h], [w, -h], [w, h], [-w, h]])


def _star_polygon(points: int, r_outer: float, r_inner: float,
                  phase: float = 0.0) -> Polygon:
    """Star with alternating outer/inner radii; r_inner == cos(pi/n)*r_outer gives a polygon."""
    t = phase + np.arange(2 * points) * np.pi / points
    r = np.where(np.arange(2 * points) % 2 == 0, r_outer, r_inner)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _any_rotation(rng: np.random.Generator) -> float:
    return float(rng.uniform(0.0, 360.0))


def square(rng: np.random.Generator) -> ShapeGeometry:
    """Square with at most 10 % aspect jitter."""
    aspect = rng.uniform(1.0, 1.1)
    return [_rectangle(1.0, 1.0 / aspect)], [], _any_rotation(rng)


def rectangle(rng: np.random.Generator) -> ShapeGeometry:
    """Rectangle with aspect 1.6-2.6: only the aspect tells it from a square."""
    aspect = rng.uniform(1.6, 2.6)
    return [_rectangle(1.0, 1.0 / aspect)], [], _any_rotation(rng)


def disc(rng: np.random.Generator) -> ShapeGeometry:
    """Filled, slightly elliptic disc."""
    return [_circle(0.5, rng.uniform(0.85, 1.0))], [], _any_rotation(rng)


def ring(rng: np.random.Generator) -> ShapeGeometry:
    """Disc with a concentric hole of 40-60 % of its diameter."""
    squash = rng.uniform(0.85, 1.0)
    hole = rng.uniform(0.4, 0.6)
    return ([_circle(0.5, squash)], [_circle(0.5 * hole, squash)],
            _any_rotation(rng))


def triangle(rng: np.random.Generator) -> ShapeGeometry:
    """Roughly equilateral triangle (vertices jittered by up to 8 %)."""
    tri = _star_polygon(3, 0.55, 0.55)[::2] + rng.uniform(-0.08, 0.08, (3, 2))
    return [tri], [], _any_rotation(rng)


def arrowhead(rng: np.random.Generator) -> ShapeGeometry:
    """Triangle whose base has a notch 30-55 % of its length deep."""
    half_width = rng.uniform(0.38, 0.5)
    notch = rng.uniform(0.3, 0.55)
    poly = np.array([[0.5, 0.0], [-0.5, half_width], [-0.5 + notch, 0.0],
                     [-0.5, -half_width]])
    return [poly], [], _any_rotation(rng)


def _cross(rng: np.random.Generator) -> Polygon:
    """Upright cross of two bars, 22-34 % thick, as one 12-vertex polygon."""
    t = rng.uniform(0.22, 0.34) / 2.0
    a = 0.5
    return np.array([[-t, -a], [t, -a], [t, -t], [a, -t], [a, t], [t, t],
                     [t, a], [-t, a], [-t, t], [-a, t], [-a, -t], [-t, -t]])


def plus(rng: np.random.Generator) -> ShapeGeometry:
    """Upright cross, tilted by at most 12 degrees."""
    return [_cross(rng)], [], float(rng.uniform(-12.0, 12.0))


def x_cross(rng: np.random.Generator) -> ShapeGeometry:
    """The plus turned by 45 +- 12 degrees."""
    return [_cross(rng)], [], float(45.0 + rng.uniform(-12.0, 12.0))


def star(rng: np.random.Generator) -> ShapeGeometry:
    """Fat six-pointed star: inner radius 50-70 % of the outer one."""
    return ([_star_polygon(6, 0.5, 0.5 * rng.uniform(0.5, 0.7))], [],
            _any_rotation(rng))


def hexagon(rng: np.random.Generator) -> ShapeGeometry:
    """Regular hexagon."""
    return [_star_polygon(3, 0.5, 0.5)], [], _any_rotation(rng)


# Class order here is the category order of the data set (category_id = index + 1).
SHAPE_BUILDERS: dict[str, Callable[[np.random.Generator], ShapeGeometry]] = {
    'square': square,
    'rectangle': rectangle,
    'disc': disc,
    'ring': ring,
    'triangle': triangle,
    'arrowhead': arrowhead,
    'plus': plus,
    'x_cross': x_cross,
    'star': star,
    'hexagon': hexagon,
}
