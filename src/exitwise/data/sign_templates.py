"""Clean, frontal drawings of 43 traffic signs modelled on the GTSRB categories.

Each sign is drawn with Pillow in unit coordinates (centre (0, 0), radius 1, y pointing down) at
4x the wanted size, then downsampled with Lanczos, so edges are antialiased. Digits and letters
come from a small built-in stroke font, so the drawings do not depend on the fonts installed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

CLASS_NAMES: tuple[str, ...] = (
    "Speed limit (20km/h)", "Speed limit (30km/h)", "Speed limit (50km/h)",
    "Speed limit (60km/h)", "Speed limit (70km/h)", "Speed limit (80km/h)",
    "End of speed limit (80km/h)", "Speed limit (100km/h)", "Speed limit (120km/h)",
    "No passing", "No passing for vehicles over 3.5 metric tons",
    "Right-of-way at the next intersection", "Priority road", "Yield", "Stop", "No vehicles",
    "Vehicles over 3.5 metric tons prohibited", "No entry", "General caution",
    "Dangerous curve to the left", "Dangerous curve to the right", "Double curve", "Bumpy road",
    "Slippery road", "Road narrows on the right", "Road work", "Traffic signals", "Pedestrians",
    "Children crossing", "Bicycles crossing", "Beware of ice/snow", "Wild animals crossing",
    "End of all speed and passing limits", "Turn right ahead", "Turn left ahead", "Ahead only",
    "Go straight or right", "Go straight or left", "Keep right", "Keep left",
    "Roundabout mandatory", "End of no passing",
    "End of no passing by vehicles over 3.5 metric tons",
)  # fmt: skip

RED, WHITE, BLACK = (200, 25, 35), (246, 246, 240), (22, 22, 24)
BLUE, YELLOW, GREY = (15, 75, 175), (250, 195, 15), (135, 135, 135)
Pt = tuple[float, float]


def arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int = 24) -> list[Pt]:
    """Points on an elliptical arc from angle ``a0`` to ``a1`` (degrees; 0 = right, 90 = down)."""
    t = np.radians(np.linspace(a0, a1, n))
    return [(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in t]


# Stroke font: each glyph is a list of polylines in a box 0.55 wide and 1 high.
GLYPHS: dict[str, list[list[Pt]]] = {
    "0": [arc(0.275, 0.5, 0.275, 0.5, 0, 360, 40)],
    "1": [[(0.06, 0.24), (0.36, 0.0), (0.36, 1.0)]],
    "2": [arc(0.275, 0.27, 0.26, 0.27, 195, 400) + [(0.0, 1.0), (0.56, 1.0)]],
    "3": [arc(0.27, 0.25, 0.24, 0.24, 205, 450), arc(0.27, 0.74, 0.27, 0.26, 270, 515)],
    "5": [[(0.52, 0.0), (0.08, 0.0), (0.05, 0.45)] + arc(0.27, 0.68, 0.28, 0.32, 220, 505)],
    "6": [arc(0.275, 0.68, 0.27, 0.32, 0, 360, 40), arc(0.55, 0.62, 0.53, 0.6, 252, 180)],
    "7": [[(0.0, 0.0), (0.55, 0.0), (0.18, 1.0)]],
    "8": [arc(0.275, 0.25, 0.22, 0.25, 0, 360), arc(0.275, 0.73, 0.27, 0.27, 0, 360)],
    "S": [arc(0.27, 0.26, 0.25, 0.25, 340, 90) + arc(0.27, 0.75, 0.26, 0.25, 270, 520)],
    "T": [[(0.0, 0.0), (0.55, 0.0)], [(0.275, 0.0), (0.275, 1.0)]],
    "O": [arc(0.275, 0.5, 0.275, 0.5, 0, 360, 40)],
    "P": [[(0.05, 1.0), (0.05, 0.0), (0.28, 0.0)] + arc(0.28, 0.27, 0.26, 0.27, 270, 450)
          + [(0.05, 0.54)]],
}  # fmt: skip


class Painter:
    """Draws in unit coordinates on an RGBA canvas of ``size`` pixels (unit radius = 0.48 size)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.k = 0.48 * size
        self.image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
        self.draw = ImageDraw.Draw(self.image)

    def p(self, pts: list[Pt]) -> list[Pt]:
        h = self.size / 2
        return [(h + x * self.k, h + y * self.k) for x, y in pts]

    def w(self, width: float) -> int:
        return max(1, round(width * self.k))

    def disc(self, r: float, fill, cx: float = 0.0, cy: float = 0.0) -> None:
        (x0, y0), (x1, y1) = self.p([(cx - r, cy - r), (cx + r, cy + r)])
        self.draw.ellipse([x0, y0, x1, y1], fill=fill)

    def poly(self, pts: list[Pt], fill) -> None:
        self.draw.polygon(self.p(pts), fill=fill)

    def line(self, pts: list[Pt], width: float, fill) -> None:
        """A polyline with round joints and caps."""
        self.draw.line(self.p(pts), fill=fill, width=self.w(width), joint="curve")
        for x, y in (pts[0], pts[-1]):
            self.disc(width / 2, fill, x, y)

    def rect(self, x0: float, y0: float, x1: float, y1: float, fill) -> None:
        self.poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], fill)

    def text(self, s: str, height: float, fill, cx: float = 0.0, cy: float = 0.0,
             width: float = 0.15) -> None:  # fmt: skip
        """Stroke-font text of cap height ``height`` centred at ``(cx, cy)``."""
        adv = 0.55 + 0.22
        x0 = cx - height * (adv * len(s) - 0.22) / 2
        for i, ch in enumerate(s):
            for stroke in GLYPHS[ch]:
                pts = [(x0 + height * (adv * i + x), cy + height * (y - 0.5)) for x, y in stroke]
                self.line(pts, width, fill)

    def arrow(self, pts: list[Pt], width: float, fill, head: float = 0.28) -> None:
        """A polyline ending in a triangular arrow head pointing along its last segment."""
        (x0, y0), (x1, y1) = pts[-2], pts[-1]
        d = math.hypot(x1 - x0, y1 - y0)
        ux, uy = (x1 - x0) / d, (y1 - y0) / d
        base = (x1 - ux * head, y1 - uy * head)
        self.line(pts[:-1] + [base], width, fill)
        tip = (x1 + ux * 0.02, y1 + uy * 0.02)
        self.poly([tip, (base[0] - uy * head * 0.8, base[1] + ux * head * 0.8),
                   (base[0] + uy * head * 0.8, base[1] - ux * head * 0.8)], fill)  # fmt: skip


# --- sign bodies -------------------------------------------------------------------------------
TRI_UP = [(0.0, -0.92), (1.0, 0.82), (-1.0, 0.82)]
TRI_DOWN = [(-1.0, -0.82), (1.0, -0.82), (0.0, 0.92)]


def _shrink(pts: list[Pt], f: float, cy: float) -> list[Pt]:
    return [(x * f, cy + (y - cy) * f) for x, y in pts]


def prohibitory(p: Painter) -> None:
    p.disc(1.0, RED)
    p.disc(0.76, WHITE)


def warning(p: Painter) -> None:
    p.poly(TRI_UP, RED)
    p.poly(_shrink(TRI_UP, 0.68, 0.24), WHITE)


def mandatory(p: Painter) -> None:
    p.disc(1.0, WHITE)
    p.disc(0.94, BLUE)


def end_of(p: Painter, stripes: int = 5) -> None:
    """White disc, thin dark rim, diagonal band of thin stripes (top right to bottom left)."""
    p.disc(1.0, (60, 60, 60))
    p.disc(0.95, WHITE)
    for i in range(stripes):
        o = (i - (stripes - 1) / 2) * 0.09
        p.line([(0.62 + o, -0.62 + o), (-0.62 + o, 0.62 + o)], 0.045, BLACK)


# --- pictograms --------------------------------------------------------------------------------
def car_rear(p: Painter, cx: float, cy: float, s: float, fill) -> None:
    p.rect(cx - 0.22 * s, cy - 0.05 * s, cx + 0.22 * s, cy + 0.16 * s, fill)
    p.poly([(cx - 0.16 * s, cy - 0.05 * s), (cx - 0.11 * s, cy - 0.24 * s),
            (cx + 0.11 * s, cy - 0.24 * s), (cx + 0.16 * s, cy - 0.05 * s)], fill)  # fmt: skip
    p.rect(cx - 0.21 * s, cy + 0.16 * s, cx - 0.12 * s, cy + 0.27 * s, fill)
    p.rect(cx + 0.12 * s, cy + 0.16 * s, cx + 0.21 * s, cy + 0.27 * s, fill)


def truck_rear(p: Painter, cx: float, cy: float, s: float, fill) -> None:
    p.rect(cx - 0.24 * s, cy - 0.34 * s, cx + 0.24 * s, cy + 0.18 * s, fill)
    p.rect(cx - 0.22 * s, cy + 0.18 * s, cx - 0.1 * s, cy + 0.3 * s, fill)
    p.rect(cx + 0.1 * s, cy + 0.18 * s, cx + 0.22 * s, cy + 0.3 * s, fill)


def truck_side(p: Painter, fill) -> None:
    p.rect(-0.5, -0.28, 0.22, 0.14, fill)
    p.poly([(0.26, -0.16), (0.42, -0.16), (0.52, 0.0), (0.52, 0.14), (0.26, 0.14)], fill)
    for x in (-0.36, -0.16, 0.38):
        p.disc(0.1, fill, x, 0.2)


def person(p: Painter, cx: float, cy: float, s: float, fill, w: float = 0.09) -> None:
    p.disc(0.1 * s, fill, cx + 0.02 * s, cy - 0.42 * s)
    p.line([(cx, cy - 0.28 * s), (cx - 0.04 * s, cy + 0.08 * s)], w * s, fill)
    p.line([(cx - 0.2 * s, cy + 0.45 * s), (cx - 0.04 * s, cy + 0.08 * s),
            (cx + 0.18 * s, cy + 0.45 * s)], w * s, fill)  # fmt: skip
    p.line([(cx - 0.2 * s, cy + 0.02 * s), (cx, cy - 0.22 * s), (cx + 0.2 * s, cy - 0.02 * s)],
           w * 0.8 * s, fill)  # fmt: skip


def _speed(v: str) -> Callable[[Painter], None]:
    def draw(p: Painter) -> None:
        prohibitory(p)
        p.text(v, 0.62, BLACK, width=0.13 if len(v) < 3 else 0.11)

    return draw


def _end_speed(p: Painter) -> None:
    p.disc(1.0, (60, 60, 60))
    p.disc(0.95, WHITE)
    p.text("80", 0.62, GREY, width=0.13)
    for i in range(4):
        o = (i - 1.5) * 0.09
        p.line([(0.62 + o, -0.62 + o), (-0.62 + o, 0.62 + o)], 0.04, BLACK)


def _no_passing(p: Painter, left: str) -> None:
    prohibitory(p)
    (truck_rear if left == "truck" else car_rear)(p, -0.3, 0.03, 1.0, RED)
    car_rear(p, 0.3, 0.03, 1.0, BLACK)


def _end_no_passing(p: Painter, left: str) -> None:
    p.disc(1.0, (60, 60, 60))
    p.disc(0.95, WHITE)
    (truck_rear if left == "truck" else car_rear)(p, -0.3, 0.03, 1.0, GREY)
    car_rear(p, 0.3, 0.03, 1.0, GREY)
    for i in range(4):
        o = (i - 1.5) * 0.09
        p.line([(0.62 + o, -0.62 + o), (-0.62 + o, 0.62 + o)], 0.04, BLACK)


def _warn(pictogram: Callable[[Painter], None]) -> Callable[[Painter], None]:
    def draw(p: Painter) -> None:
        warning(p)
        pictogram(p)

    return draw


def _mand(pictogram: Callable[[Painter], None]) -> Callable[[Painter], None]:
    def draw(p: Painter) -> None:
        mandatory(p)
        pictogram(p)

    return draw


def _priority(p: Painter) -> None:
    p.poly([(0, -1.0), (1.0, 0), (0, 1.0), (-1.0, 0)], (40, 40, 40))
    p.poly([(0, -0.95), (0.95, 0), (0, 0.95), (-0.95, 0)], WHITE)
    p.poly([(0, -0.66), (0.66, 0), (0, 0.66), (-0.66, 0)], YELLOW)


def _yield(p: Painter) -> None:
    p.poly(TRI_DOWN, RED)
    p.poly(_shrink(TRI_DOWN, 0.62, -0.24), WHITE)


def _stop(p: Painter) -> None:
    octagon = [(math.cos(math.radians(22.5 + 45 * i)), math.sin(math.radians(22.5 + 45 * i)))
               for i in range(8)]  # fmt: skip
    p.poly(octagon, WHITE)
    p.poly([(0.93 * x, 0.93 * y) for x, y in octagon], RED)
    p.text("STOP", 0.42, WHITE, width=0.1)


def _no_entry(p: Painter) -> None:
    p.disc(1.0, RED)
    p.rect(-0.62, -0.15, 0.62, 0.15, WHITE)


def _truck_prohibited(p: Painter) -> None:
    prohibitory(p)
    truck_side(p, BLACK)


def _right_of_way(p: Painter) -> None:
    p.poly([(-0.06, -0.22), (0.06, -0.22), (0.1, 0.62), (-0.1, 0.62)], BLACK)
    p.line([(-0.32, 0.12), (0.32, 0.12)], 0.09, BLACK)


def _caution(p: Painter) -> None:
    p.poly([(-0.07, -0.3), (0.07, -0.3), (0.04, 0.38), (-0.04, 0.38)], BLACK)
    p.disc(0.075, BLACK, 0.0, 0.54)


def _curve(sign: float) -> Callable[[Painter], None]:
    def draw(p: Painter) -> None:
        p.arrow([(0.1 * sign, 0.62), (0.1 * sign, 0.15), (-0.05 * sign, -0.02),
                 (-0.3 * sign, -0.12)], 0.1, BLACK, head=0.2)  # fmt: skip

    return draw


def _double_curve(p: Painter) -> None:
    p.arrow(arc(0.16, 0.42, 0.2, 0.2, 90, 270, 10) + arc(0.16, 0.02, 0.2, 0.2, 90, -80, 10),
            0.09, BLACK, head=0.18)  # fmt: skip


def _bumpy(p: Painter) -> None:
    p.line(
        [(-0.55, 0.6)] + arc(-0.22, 0.6, 0.22, 0.32, 180, 360, 12)
        + arc(0.22, 0.6, 0.22, 0.32, 180, 360, 12) + [(0.55, 0.6)],
        0.08, BLACK,
    )  # fmt: skip


def _slippery(p: Painter) -> None:
    car_rear(p, 0.0, -0.1, 0.9, BLACK)
    for o in (-0.18, 0.18):
        p.line([(o + 0.08 * math.sin(k * 1.6), 0.2 + 0.07 * k) for k in range(7)], 0.05, BLACK)


def _narrows_right(p: Painter) -> None:
    p.line([(-0.22, -0.2), (-0.22, 0.66)], 0.09, BLACK)
    p.line([(0.24, -0.2), (0.24, 0.12), (0.04, 0.32), (0.04, 0.66)], 0.09, BLACK)


def _road_work(p: Painter) -> None:
    person(p, -0.08, 0.15, 0.85, BLACK)
    p.line([(0.08, 0.0), (0.3, 0.5)], 0.05, BLACK)
    p.poly([(0.22, 0.66), (0.45, 0.42), (0.58, 0.66)], BLACK)


def _signals(p: Painter) -> None:
    p.rect(-0.16, -0.3, 0.16, 0.62, BLACK)
    for y, c in ((-0.15, RED), (0.16, YELLOW), (0.47, (20, 170, 60))):
        p.disc(0.11, c, 0.0, y)


def _pedestrian(p: Painter) -> None:
    person(p, 0.0, 0.2, 0.95, BLACK)


def _children(p: Painter) -> None:
    person(p, -0.16, 0.17, 0.95, BLACK)
    person(p, 0.22, 0.33, 0.62, BLACK)


def _bicycle(p: Painter) -> None:
    for x in (-0.32, 0.32):
        p.draw.ellipse([*p.p([(x - 0.2, 0.26)])[0], *p.p([(x + 0.2, 0.66)])[0]],
                       outline=BLACK, width=p.w(0.06))  # fmt: skip
    p.line([(-0.32, 0.46), (-0.05, 0.14), (0.22, 0.14), (0.32, 0.46)], 0.06, BLACK)
    p.line([(-0.05, 0.14), (0.02, 0.46), (0.22, 0.14)], 0.06, BLACK)
    p.disc(0.09, BLACK, 0.0, -0.22)


def _snow(p: Painter) -> None:
    for a in (90, 30, 150):
        r = math.radians(a)
        dx, dy = 0.44 * math.cos(r), 0.44 * math.sin(r)
        p.line([(-dx, 0.2 - dy), (dx, 0.2 + dy)], 0.07, BLACK)
    p.disc(0.1, BLACK, 0.0, 0.2)


def _deer(p: Painter) -> None:
    p.poly([(-0.45, 0.1), (0.05, -0.08), (0.25, -0.3), (0.38, -0.28), (0.22, 0.05),
            (-0.4, 0.3)], BLACK)  # fmt: skip
    p.line([(-0.35, 0.22), (-0.55, 0.62)], 0.07, BLACK)
    p.line([(-0.2, 0.2), (-0.12, 0.62)], 0.07, BLACK)
    p.line([(0.12, 0.02), (0.3, 0.55)], 0.07, BLACK)
    p.line([(0.32, -0.3), (0.28, -0.5), (0.4, -0.62)], 0.05, BLACK)


def _ahead(p: Painter) -> None:
    p.arrow([(0.0, 0.68), (0.0, -0.7)], 0.2, WHITE, head=0.42)


def _turn(sign: float) -> Callable[[Painter], None]:
    def draw(p: Painter) -> None:
        p.arrow([(-0.2 * sign, 0.7), (-0.2 * sign, -0.05)] + arc(0.12 * sign, -0.05, 0.32, 0.32,
                90 + 90 * sign, 90 + 135 * sign, 5)[1:] + [(0.72 * sign, -0.3)], 0.18, WHITE,
                head=0.38)  # fmt: skip

    return draw


def _straight_or(sign: float) -> Callable[[Painter], None]:
    def draw(p: Painter) -> None:
        p.arrow([(-0.12 * sign, 0.7), (-0.12 * sign, -0.7)], 0.16, WHITE, head=0.34)
        p.arrow([(-0.12 * sign, 0.25), (0.3 * sign, -0.05), (0.68 * sign, -0.05)], 0.15, WHITE,
                head=0.32)  # fmt: skip

    return draw


def _keep(sign: float) -> Callable[[Painter], None]:
    def draw(p: Painter) -> None:
        p.arrow([(-0.42 * sign, -0.42), (0.45 * sign, 0.45)], 0.2, WHITE, head=0.42)

    return draw


def _roundabout(p: Painter) -> None:
    for k in range(3):
        a0 = 200 + 120 * k
        p.arrow(arc(0.0, 0.0, 0.5, 0.5, a0, a0 + 75, 8), 0.14, WHITE, head=0.26)


DRAWERS: tuple[Callable[[Painter], None], ...] = (
    _speed("20"), _speed("30"), _speed("50"), _speed("60"), _speed("70"), _speed("80"),
    _end_speed, _speed("100"), _speed("120"),
    lambda p: _no_passing(p, "car"), lambda p: _no_passing(p, "truck"),
    _warn(_right_of_way), _priority, _yield, _stop, prohibitory, _truck_prohibited, _no_entry,
    _warn(_caution), _warn(_curve(1.0)), _warn(_curve(-1.0)), _warn(_double_curve),
    _warn(_bumpy), _warn(_slippery), _warn(_narrows_right), _warn(_road_work),
    _warn(_signals), _warn(_pedestrian), _warn(_children), _warn(_bicycle), _warn(_snow),
    _warn(_deer), end_of, _mand(_turn(1.0)), _mand(_turn(-1.0)), _mand(_ahead),
    _mand(_straight_or(1.0)), _mand(_straight_or(-1.0)), _mand(_keep(1.0)), _mand(_keep(-1.0)),
    _mand(_roundabout), lambda p: _end_no_passing(p, "car"),
    lambda p: _end_no_passing(p, "truck"),
)  # fmt: skip
assert len(DRAWERS) == len(CLASS_NAMES) == 43


@lru_cache(maxsize=8)
def render_templates(size: int) -> np.ndarray:
    """All 43 signs as premultiplied RGBA float32 in [0, 1], ``(43, 4, size, size)``.

    The sign's unit radius spans 0.48 of the side; drawn at 4x and downsampled with Lanczos.
    """
    out = np.empty((len(DRAWERS), 4, size, size), dtype=np.float32)
    for k, draw in enumerate(DRAWERS):
        painter = Painter(4 * size)
        draw(painter)
        small = painter.image.resize((size, size), Image.Resampling.LANCZOS)
        rgba = np.asarray(small, dtype=np.float32).transpose(2, 0, 1) / 255.0
        rgba[:3] *= rgba[3:]
        out[k] = rgba
    out.setflags(write=False)
    return out
