#!/usr/bin/env python3
"""The shapes world of issue D: seeded synthetic scenes and their captions.

The world, exactly (tests/shapes_world.hpp is a C++ port that renders identical pixels):

* An image is 96 x 96 RGB, white (255, 255, 255) background, one or two filled shapes, no anti-aliasing.
* A shape is (kind, colour, s, x0, y0): kind in ``circle``, ``square``, ``triangle``; colour in ``red``
  (220, 30, 30), ``green`` (30, 160, 60), ``blue`` (40, 70, 220), ``yellow`` (230, 200, 30); side s an
  integer in [24, 40]; its s x s box is [x0, x0 + s) x [y0, y0 + s) with integer x0, y0 (x to the right,
  y downwards, pixel (x, y) is column x of row y).
* One shape: anywhere fully inside the image, 0 <= x0 and x0 + s <= 96 (same for y). Two shapes: the first
  fully inside the left half (x0 + s <= 48), the second fully inside the right half (x0 >= 48); any height.
* Caption: ``a {colour} {kind}`` for one shape, ``a {colour} {kind} and a {colour} {kind}`` for two, left
  then right (lower case, no period). The two shapes may share colour and kind.

Rasterisation rule: pixel (x, y) gets the shape's colour when its centre (x + 0.5, y + 0.5) lies inside the
shape's exact geometry, boundary included:

* square: the box itself (every pixel of the box; centres are never on its edges);
* circle: the disk inscribed in the box, centre (x0 + s/2, y0 + s/2), radius s/2;
* triangle: the isosceles triangle with apex (x0 + s/2, y0) at the middle of the box's top edge and base
  from (x0, y0 + s) to (x0 + s, y0 + s) on its bottom edge.

In doubled integer coordinates (X = 2x + 1, Y = 2y + 1, which are the centres times two) these tests are
exact integer arithmetic, and that is how both renderers compute them:

* square:   2*x0 < X < 2*(x0 + s) and 2*y0 < Y < 2*(y0 + s)  (i.e. x0 <= x < x0 + s, same for y);
* circle:   (X - 2*x0 - s)^2 + (Y - 2*y0 - s)^2 <= s^2;
* triangle: 2*y0 < Y < 2*(y0 + s) and 2 * |X - 2*x0 - s| <= Y - 2*y0.

Shapes are painted in order (left then right); they never overlap.

Sampling (`sample_scene`, numpy Generator): one or two shapes with probability 1/2 each; kind and colour
uniform; s uniform in [24, 40]; x0, y0 uniform over their allowed integer ranges. The C++ port uses its own
RNG with the same distribution (only the world and the pixels must agree, not the draws).

Usage, from the repository root:
    python tools/shapes/shapes_world.py scenes --out DIR --count N --seed S   (N PNGs + captions.txt)
    python tools/shapes/shapes_world.py reference --out tests/data/shapes/render_reference.json
    python tools/shapes/shapes_world.py examples --out examples/images
The second writes the C++ renderer's test: fixed shape parameter sets (every kind at every side, borders, two
shape scenes) with the FNV-1a 64 checksum of their rendered RGB bytes and their painted pixel counts.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SIZE = 96
HALF = SIZE // 2
MIN_SIDE, MAX_SIDE = 24, 40
KINDS = ("circle", "square", "triangle")
COLOURS = {"red": (220, 30, 30), "green": (30, 160, 60), "blue": (40, 70, 220), "yellow": (230, 200, 30)}
COLOUR_NAMES = tuple(COLOURS)


@dataclass(frozen=True)
class Shape:
    kind: str
    colour: str
    s: int
    x0: int
    y0: int

    def words(self) -> str:
        return f"a {self.colour} {self.kind}"


def shape_mask(shape: Shape, size: int = SIZE) -> np.ndarray:
    """Boolean (size, size) mask of the pixels the shape covers (the rule of the module docstring)."""
    Y, X = np.mgrid[0:size, 0:size]
    X = 2 * X.astype(np.int64) + 1
    Y = 2 * Y.astype(np.int64) + 1
    s, x0, y0 = shape.s, shape.x0, shape.y0
    in_rows = (Y > 2 * y0) & (Y < 2 * (y0 + s))
    if shape.kind == "square":
        return in_rows & (X > 2 * x0) & (X < 2 * (x0 + s))
    if shape.kind == "circle":
        return (X - 2 * x0 - s) ** 2 + (Y - 2 * y0 - s) ** 2 <= s * s
    if shape.kind == "triangle":
        return in_rows & (2 * np.abs(X - 2 * x0 - s) <= Y - 2 * y0)
    raise ValueError(f"unknown shape kind {shape.kind!r}")


def render(shapes: list[Shape] | tuple[Shape, ...], size: int = SIZE) -> np.ndarray:
    """The scene as uint8 (size, size, 3), white background, shapes painted in order."""
    image = np.full((size, size, 3), 255, dtype=np.uint8)
    for shape in shapes:
        image[shape_mask(shape, size)] = COLOURS[shape.colour]
    return image


def caption(shapes: list[Shape] | tuple[Shape, ...]) -> str:
    return " and ".join(shape.words() for shape in shapes)


def all_captions() -> list[str]:
    """Every caption of the world: 12 with one shape, 144 with two."""
    ones = [f"a {c} {k}" for c in COLOUR_NAMES for k in KINDS]
    return ones + [f"{a} and {b}" for a in ones for b in ones]


def _shape(rng: np.random.Generator, x_lo: int, x_hi: int) -> Shape:
    """A random shape whose box lies in columns [x_lo, x_hi) and anywhere vertically."""
    kind = KINDS[rng.integers(len(KINDS))]
    colour = COLOUR_NAMES[rng.integers(len(COLOUR_NAMES))]
    s = int(rng.integers(MIN_SIDE, MAX_SIDE + 1))
    x0 = int(rng.integers(x_lo, x_hi - s + 1))
    y0 = int(rng.integers(0, SIZE - s + 1))
    return Shape(kind, colour, s, x0, y0)


def sample_scene(rng: np.random.Generator) -> list[Shape]:
    if rng.integers(2) == 0:
        return [_shape(rng, 0, SIZE)]
    return [_shape(rng, 0, HALF), _shape(rng, HALF, SIZE)]


def sample_batch(rng: np.random.Generator, n: int) -> tuple[np.ndarray, list[str]]:
    """n fresh scenes: uint8 (n, 96, 96, 3) and their captions."""
    scenes = [sample_scene(rng) for _ in range(n)]
    return np.stack([render(sc) for sc in scenes]), [caption(sc) for sc in scenes]


def fnv1a64(image: np.ndarray) -> int:
    """FNV-1a (64 bit) of the image's bytes, row-major RGB."""
    h = 0xCBF29CE484222325
    for b in image.tobytes():
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def reference_cases() -> list[list[Shape]]:
    cases = []
    for i, kind in enumerate(KINDS):  # every kind at every side, odd and even offsets
        for s in range(MIN_SIDE, MAX_SIDE + 1):
            cases.append([Shape(kind, COLOUR_NAMES[(i + s) % 4], s, 3 + s % 5, 11 - s % 4)])
    for kind in KINDS:  # the corners and both halves' limits
        for s in (MIN_SIDE, MAX_SIDE):
            cases.append([Shape(kind, "red", s, 0, 0)])
            cases.append([Shape(kind, "yellow", s, SIZE - s, SIZE - s)])
            cases.append([Shape(kind, "green", s, HALF - s, SIZE - s), Shape(kind, "blue", s, HALF, 0)])
    rng = np.random.default_rng(7)
    cases += [sample_scene(rng) for _ in range(20)]
    return cases


def write_reference(path: Path) -> None:
    import json
    out = []
    for scene in reference_cases():
        image = render(scene)
        out.append({"shapes": [[sh.kind, sh.colour, sh.s, sh.x0, sh.y0] for sh in scene], "caption": caption(scene),
                    "painted": int((image != 255).any(axis=-1).sum()), "fnv1a64": f"{fnv1a64(image):016x}"})
    path.parent.mkdir(parents=True, exist_ok=True)
    head = json.dumps({"made_by": "tools/shapes/shapes_world.py reference", "size": SIZE,
                       "shapes": "[kind, colour, s, x0, y0]"})[:-1]
    path.write_text(head + ', "cases": [\n' + ",\n".join(json.dumps(c) for c in out) + "\n]}\n")


EXAMPLES = [  # examples/images: hand-placed scenes, one of each kind and colour at least
    [Shape("circle", "red", 36, 6, 30), Shape("square", "blue", 30, 58, 40)],
    [Shape("triangle", "green", 40, 30, 26)],
    [Shape("square", "yellow", 28, 12, 12), Shape("triangle", "red", 38, 52, 50)],
    [Shape("circle", "blue", 32, 58, 8)],
    [Shape("circle", "green", 26, 16, 60), Shape("triangle", "yellow", 34, 56, 20)],
    [Shape("square", "red", 40, 10, 48)],
]


def write_examples(folder: Path) -> None:
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for scene in EXAMPLES:
        text = caption(scene)
        name = text.removeprefix("a ").replace(" and a ", "_and_").replace(" ", "_") + ".png"
        Image.fromarray(render(scene), "RGB").save(folder / name)
        lines.append(f"{name}\t{text}")
    (folder / "captions.txt").write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("scenes", help="render seeded scenes as PNG files with captions.txt")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--count", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p = commands.add_parser("reference", help="the C++ renderer's checksums")
    p.add_argument("--out", type=Path, required=True)
    p = commands.add_parser("examples", help="the hand-placed scenes of examples/images")
    p.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "reference":
        write_reference(args.out)
        return 0
    if args.command == "examples":
        write_examples(args.out)
        return 0
    from PIL import Image
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    lines = []
    for i in range(args.count):
        scene = sample_scene(rng)
        name = f"scene_{i:04d}.png"
        Image.fromarray(render(scene), "RGB").save(args.out / name)
        lines.append(f"{name}\t{caption(scene)}")
    (args.out / "captions.txt").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
