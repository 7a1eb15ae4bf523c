"""The twelve designs of ``omnipose synth``, one per class, written in the figure language.

A design is fixed, the same for every seed: it is the class identity.
"""
from __future__ import annotations

from functools import lru_cache

from omnipose.data.synth.config import SYNTH_CLASSES, SynthError
from omnipose.data.synth.figures import Figure, FigureBuilder

# LEGO colours as albedo (RGB in [0, 1]).
RED, BLUE, YELLOW = (0.78, 0.08, 0.06), (0.05, 0.3, 0.72), (0.98, 0.78, 0.08)
GREEN, DARK_GREEN, LIME = (0.1, 0.55, 0.22), (0.04, 0.33, 0.15), (0.6, 0.78, 0.12)
WHITE, LIGHT_GREY, DARK_GREY = (0.93, 0.93, 0.9), (0.62, 0.64, 0.64), (0.33, 0.35, 0.37)
BLACK, ORANGE, BROWN, TAN = (0.09, 0.09, 0.1), (0.96, 0.48, 0.05), (0.42, 0.23, 0.1), (0.86, 0.74, 0.52)
AZURE, DARK_BLUE, DARK_YELLOW = (0.32, 0.66, 0.92), (0.06, 0.16, 0.42), (0.9, 0.64, 0.05)


def _robot(b: FigureBuilder) -> None:
    b.legs(((0, 0), (3, 0)), (1, 2), ((3, DARK_GREY), (3, DARK_GREY)))
    b.brick(0, 0, 6, 4, 2, 1, LIGHT_GREY)
    b.brick(0, 0, 7, 4, 2, 3, BLUE)
    b.brick(0, 0, 10, 4, 2, 3, BLUE)
    b.brick(-1, 0, 13, 6, 2, 1, LIGHT_GREY)
    for x in (-1, 4):
        b.brick(x, 0, 10, 1, 2, 3, LIGHT_GREY)
        b.brick(x, 0, 7, 1, 2, 3, LIGHT_GREY)
        b.brick(x, 0.25, 5, 1, 1.5, 2, YELLOW, studs=False)
    b.brick(1, 0, 14, 2, 2, 1, DARK_GREY)
    b.brick(0.5, -0.5, 15, 3, 3, 4, LIGHT_GREY)
    b.rod(1, 1.0, -0.05, 10.5, 0.3, 0.12, RED)
    b.rod(1, 2.0, -0.05, 10.5, 0.3, 0.12, YELLOW)
    b.rod(1, 3.0, -0.05, 10.5, 0.3, 0.12, AZURE)
    b.rod(1, 1.4, -0.55, 17.3, 0.32, 0.12, BLACK)
    b.rod(1, 2.6, -0.55, 17.3, 0.32, 0.12, BLACK)
    b.block(1.2, -0.56, 15.6, 2.8, -0.5, 16.1, DARK_GREY)
    b.rod(2, 2.0, 1.0, 20.0, 0.1, 0.8, DARK_GREY)
    b.rod(2, 2.0, 1.0, 21.3, 0.22, 0.3, RED)


def _tower(b: FigureBuilder) -> None:
    b.brick(-1, -1, 0, 6, 6, 1, GREEN)
    for level in range(5):
        z = 1 + 3 * level
        first, second = (LIGHT_GREY, DARK_GREY) if level % 2 == 0 else (DARK_GREY, LIGHT_GREY)
        if level % 2 == 0:
            b.brick(0, 0, z, 4, 2, 3, first)
            b.brick(0, 2, z, 4, 2, 3, second)
        else:
            b.brick(0, 0, z, 2, 4, 3, first)
            b.brick(2, 0, z, 2, 4, 3, second)
    b.brick(-0.5, -0.5, 16, 5, 5, 1, DARK_GREY)
    for x, y in ((-0.5, -0.5), (3.5, -0.5), (-0.5, 3.5), (3.5, 3.5), (1.5, -0.5), (1.5, 3.5)):
        b.brick(x, y, 17, 1, 1, 3, LIGHT_GREY)
    b.block(1.2, -0.06, 1, 2.8, 0, 6.5, BROWN)
    b.block(1.4, -0.06, 9, 2.6, 0, 12, BLACK)
    b.block(4, 1.4, 9, 4.06, 2.6, 12, BLACK)
    b.rod(2, 2.0, 2.0, 21.5, 0.1, 1.8, BROWN)
    b.block(2.1, 1.96, 22.0, 3.4, 2.04, 24.0, RED)


def _duck(b: FigureBuilder) -> None:
    b.brick(2, 0, 0, 2, 1, 1, ORANGE)
    b.brick(2, 3, 0, 2, 1, 1, ORANGE)
    b.brick(0, 0, 1, 6, 4, 3, YELLOW)
    b.brick(0, 0, 4, 5, 4, 3, YELLOW)
    b.brick(-1, 1, 4, 1, 2, 4, YELLOW, slope=("-x", 1))
    b.block(0.8, -0.3, 3, 4.2, 0, 6, DARK_YELLOW)
    b.block(0.8, 4, 3, 4.2, 4.3, 6, DARK_YELLOW)
    b.brick(4, 1, 7, 2, 2, 3, YELLOW)
    b.brick(4, 1, 10, 3, 2, 3, YELLOW)
    b.brick(7, 1, 10, 1, 2, 2, ORANGE, slope=("+x", 0.5))
    b.rod(1, 5.8, 0.95, 11.8, 0.22, 0.12, BLACK)
    b.rod(1, 5.8, 3.05, 11.8, 0.22, 0.12, BLACK)


def _turtle(b: FigureBuilder) -> None:
    b.legs(((0, 0), (4, 0), (0, 3), (4, 3)), (1, 1), ((3, LIME),))
    b.brick(0, 0, 3, 5, 4, 1, DARK_GREEN)
    b.brick(0, 0, 4, 3, 4, 3, GREEN)
    b.brick(3, 0, 4, 2, 4, 3, DARK_GREEN)
    b.brick(5, 1, 3, 2, 2, 3, LIME)
    b.brick(-1, 1.5, 3, 1, 1, 2, LIME, slope=("-x", 0.5))
    b.brick(1, 1, 7, 3, 2, 3, GREEN)
    b.brick(0, 1, 7, 1, 2, 3, DARK_GREEN, slope=("-x", 0.5))
    b.brick(4, 1, 7, 1, 2, 3, DARK_GREEN, slope=("+x", 0.5))
    b.brick(1, 0, 7, 3, 1, 3, GREEN, slope=("-y", 0.5))
    b.brick(1, 3, 7, 3, 1, 3, GREEN, slope=("+y", 0.5))
    b.brick(2, 1.5, 10, 1, 1, 1, YELLOW)
    b.rod(1, 6.4, 0.95, 5.0, 0.2, 0.12, BLACK)
    b.rod(1, 6.4, 3.05, 5.0, 0.2, 0.12, BLACK)


def _giraffe(b: FigureBuilder) -> None:
    b.legs(((0, 0), (3, 0), (0, 1), (3, 1)), (1, 1), ((1, BROWN), (5, YELLOW)))
    b.brick(0, 0, 6, 4, 2, 3, YELLOW)
    for x0, z0 in ((0.4, 6.5), (1.8, 7.3), (0.9, 8.1)):
        b.block(x0, -0.05, z0, x0 + 0.8, 0, z0 + 1.5, BROWN)
        b.block(x0 + 0.3, 2, z0, x0 + 1.1, 2.05, z0 + 1.5, BROWN)
    for z in (9, 12, 15):
        b.brick(3, 0, z, 1, 2, 3, YELLOW)
    b.block(2.95, 0.6, 10.5, 3.0, 1.4, 17.5, BROWN)
    b.brick(3, 0, 18, 3, 2, 3, YELLOW)
    b.rod(1, 4.6, -0.05, 20.0, 0.2, 0.12, BLACK)
    b.rod(1, 4.6, 2.05, 20.0, 0.2, 0.12, BLACK)
    b.rod(0, 6.05, 1.0, 19.0, 0.3, 0.1, BROWN)
    for y in (0.5, 1.5):
        b.rod(2, 3.5, y, 22.0, 0.12, 0.4, BROWN)
        b.rod(2, 3.5, y, 22.8, 0.2, 0.24, BROWN)
    b.block(-0.5, 0.85, 7.0, 0, 1.15, 8.5, BROWN)


def _car(b: FigureBuilder) -> None:
    b.brick(0, 0, 1, 8, 4, 1, DARK_GREY)
    b.brick(0, 0, 2, 8, 4, 3, RED)
    b.brick(2, 0, 5, 1, 4, 3, AZURE, slope=("-x", 0.5))
    b.brick(3, 0, 5, 2, 4, 3, RED)
    b.brick(5, 0, 5, 1, 4, 3, AZURE, slope=("+x", 0.5))
    b.brick(3, 0, 8, 2, 4, 1, RED)
    b.block(3.2, -0.05, 5.6, 4.8, 0, 7.6, AZURE)
    b.block(3.2, 4, 5.6, 4.8, 4.05, 7.6, AZURE)
    for x in (1.5, 6.5):
        for y in (-0.25, 4.25):
            b.rod(1, x, y, 1.75, 0.7, 0.5, BLACK)
            b.rod(1, x, y, 1.75, 0.3, 0.58, LIGHT_GREY)
    b.rod(0, 8.03, 0.8, 3.5, 0.3, 0.1, YELLOW)
    b.rod(0, 8.03, 3.2, 3.5, 0.3, 0.1, YELLOW)
    b.rod(0, -0.03, 0.8, 3.5, 0.25, 0.1, ORANGE)
    b.rod(0, -0.03, 3.2, 3.5, 0.25, 0.1, ORANGE)
    b.block(8, 0, 1, 8.3, 4, 2, LIGHT_GREY)


def _house(b: FigureBuilder) -> None:
    b.brick(-1, -1, 0, 8, 7, 1, GREEN)
    for level in range(3):
        z = 1 + 3 * level
        colour = TAN if level % 2 == 0 else WHITE
        b.brick(0, 0, z, 3, 5, 3, colour)
        b.brick(3, 0, z, 3, 5, 3, colour)
    b.block(2.4, -0.06, 1, 3.6, 0, 6.5, BROWN)
    b.rod(1, 3.35, -0.1, 3.8, 0.08, 0.1, YELLOW)
    for x0 in (0.5, 4.5):
        b.block(x0, -0.06, 5, x0 + 1, 0, 7.5, AZURE)
    b.block(6, 1.5, 4.5, 6.06, 3.5, 7.5, AZURE)
    b.block(-0.06, 1.5, 4.5, 0, 3.5, 7.5, AZURE)
    b.brick(-0.3, -0.5, 10, 6.6, 3.0, 6, RED, slope=("-y", 1))
    b.brick(-0.3, 2.5, 10, 6.6, 3.0, 6, RED, slope=("+y", 1))
    b.brick(4, 3, 12, 1, 1, 6, DARK_GREY)


def _elephant(b: FigureBuilder) -> None:
    b.legs(((0, 0), (4, 0), (0, 3), (4, 3)), (2, 2), ((3, LIGHT_GREY), (3, LIGHT_GREY)))
    b.brick(0, 0, 6, 6, 5, 3, LIGHT_GREY)
    b.brick(0, 0, 9, 6, 5, 3, LIGHT_GREY)
    b.brick(1, 1, 12, 4, 3, 1, DARK_GREY)
    b.brick(6, 1, 7, 2, 3, 3, LIGHT_GREY)
    b.brick(6, 1, 10, 2, 3, 3, LIGHT_GREY)
    b.brick(8, 2, 4, 1, 1, 3, LIGHT_GREY)
    b.brick(8, 2, 7, 1, 1, 3, LIGHT_GREY)
    b.brick(8, 2, 3, 1, 1, 1, DARK_GREY)
    b.block(6.2, 0.3, 8, 7.2, 1, 13, DARK_GREY)
    b.block(6.2, 4, 8, 7.2, 4.7, 13, DARK_GREY)
    b.rod(0, 8.5, 1.5, 8.0, 0.15, 1.0, WHITE)
    b.rod(0, 8.5, 3.5, 8.0, 0.15, 1.0, WHITE)
    b.rod(0, 8.03, 1.5, 11.5, 0.2, 0.1, BLACK)
    b.rod(0, 8.03, 3.5, 11.5, 0.2, 0.1, BLACK)
    b.rod(0, -0.4, 2.5, 10.0, 0.1, 0.8, DARK_GREY)


def _rocket(b: FigureBuilder) -> None:
    b.round_brick(0, 0, -2, 0.9, 1, ORANGE, studs=False)
    b.round_brick(0, 0, -4, 0.5, 2, YELLOW, studs=False)
    for level in range(5):
        b.round_brick(0, 0, 3 * level, 1.5, 3, RED if level == 3 else WHITE)
    b.round_brick(0, 0, 15, 0.65, 3, RED)
    b.round_brick(0, 0, 18, 0.45, 2, RED)
    b.rod(2, 0, 0, 20.5, 0.15, 1.0, RED)
    b.brick(1.2, -0.15, 0, 1.8, 0.3, 6, BLUE, slope=("+x", 1), studs=False)
    b.brick(-3.0, -0.15, 0, 1.8, 0.3, 6, BLUE, slope=("-x", 1), studs=False)
    b.brick(-0.15, 1.2, 0, 0.3, 1.8, 6, BLUE, slope=("+y", 1), studs=False)
    b.brick(-0.15, -3.0, 0, 0.3, 1.8, 6, BLUE, slope=("-y", 1), studs=False)
    b.rod(1, 0, -1.45, 9.5, 0.5, 0.2, AZURE)
    b.rod(0, 1.45, 0, 9.5, 0.5, 0.2, AZURE)


def _fish(b: FigureBuilder) -> None:
    layers = ((0, 3, 6, 2), (2, 1, 7, 3), (5, 0, 8, 3), (8, 1, 7, 3), (11, 3, 6, 2))
    for z, x0, x1, h in layers:
        cuts = [x0] + [c for c in (2, 3, 5, 6) if x0 < c < x1] + [x1]
        for a, c in zip(cuts[:-1], cuts[1:]):
            b.brick(a, 0, z, c - a, 2, h, WHITE if a in (2, 5) else ORANGE)
    b.block(-1.8, 0.8, 2, 0, 1.2, 11, ORANGE)
    b.block(-2.2, 0.8, 1, -1.8, 1.2, 12, BLACK)
    b.block(3, 0.85, 13, 5.6, 1.15, 16, ORANGE)
    b.block(3, 0.85, 16, 5.6, 1.15, 16.6, BLACK)
    for y, sign in ((-0.06, -1), (2.06, 1)):
        b.rod(1, 6.3, y, 9.5, 0.38, 0.12, WHITE)
        b.rod(1, 6.35, y + sign * 0.05, 9.5, 0.18, 0.12, BLACK)
    b.block(4.2, -0.3, 4, 5.2, 0, 6, ORANGE)
    b.block(4.2, 2, 4, 5.2, 2.3, 6, ORANGE)


def _dog(b: FigureBuilder) -> None:
    b.legs(((0, 0), (4, 0), (0, 2), (4, 2)), (1, 1), ((1, WHITE), (5, TAN)))
    b.brick(0, 0, 6, 5, 3, 3, TAN)
    b.brick(1, 0, 9, 2, 3, 1, BROWN)
    b.brick(4, 0, 9, 2, 3, 3, TAN)
    b.block(3.95, -0.05, 11.0, 6.05, 3.05, 11.8, RED)
    b.brick(4, 0, 12, 3, 3, 3, TAN)
    b.brick(7, 1, 12, 1, 1, 2, TAN)
    b.rod(0, 8.03, 1.5, 13.5, 0.2, 0.1, BLACK)
    b.rod(0, 7.03, 0.55, 14.2, 0.22, 0.1, BLACK)
    b.rod(0, 7.03, 2.45, 14.2, 0.22, 0.1, BLACK)
    b.block(4.6, -0.3, 10.5, 5.6, 0, 14.5, BROWN)
    b.block(4.6, 3, 10.5, 5.6, 3.3, 14.5, BROWN)
    b.brick(-1, 1, 8, 1, 1, 4, TAN, slope=("-x", 1), studs=False)


def _penguin(b: FigureBuilder) -> None:
    b.brick(0, -1, 0, 1, 2, 1, ORANGE)
    b.brick(2, -1, 0, 1, 2, 1, ORANGE)
    for level in range(4):
        b.brick(0, 0, 1 + 3 * level, 3, 3, 3, BLACK)
    b.brick(0, 0, 13, 3, 3, 3, BLACK)
    b.block(0.4, -0.06, 2, 2.6, 0, 11, WHITE)
    b.brick(1, -1, 13, 1, 1, 2, ORANGE, slope=("-y", 0.5), studs=False)
    for x in (0.6, 2.4):
        b.rod(1, x, -0.05, 15.0, 0.3, 0.12, WHITE)
        b.rod(1, x, -0.1, 15.0, 0.14, 0.12, BLACK)
    b.block(-0.3, 0.5, 4, 0, 2.5, 11, BLACK)
    b.block(3, 0.5, 4, 3.3, 2.5, 11, BLACK)
    b.brick(0.5, 0.5, 16, 2, 2, 1, YELLOW)


_DESIGNS = {
    "01Robot": _robot, "02Tower": _tower, "03Duck": _duck, "04Turtle": _turtle, "05Giraffe": _giraffe,
    "06Car": _car, "07House": _house, "08Elephant": _elephant, "09Rocket": _rocket, "10Fish": _fish,
    "11Dog": _dog, "12Penguin": _penguin,
}  # fmt: skip


@lru_cache(maxsize=None)
def build_figure(class_name: str) -> Figure:
    """The figure of a synth class: a fixed design, the same for every seed (the class identity)."""
    if class_name not in _DESIGNS:
        raise SynthError(f"unknown synth class '{class_name}'; choose from {', '.join(SYNTH_CLASSES)}.")
    builder = FigureBuilder()
    _DESIGNS[class_name](builder)
    return builder.build()

