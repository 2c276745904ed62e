"""A procedural two-domain street-scene dataset: the project's embedded default data.

The **source** domain is written in the GTA5 file format (``gta/images/NNNNN.png`` and palette
``gta/labels/NNNNN.png`` of Cityscapes label ids), the **target** domain in the Cityscapes format
(``cityscapes/leftImg8bit/{train,val}/<city>/..._leftImg8bit.png`` and ``..._gtFine_labelIds.png``),
so the real readers and the real ``prepare`` conversion run on it.

Both domains share the scene grammar (a road to a vanishing point, sidewalks, facades, trees,
poles with lights and signs, vehicles, people, riders) and all 19 classes, but differ the way GTA5
and Cityscapes do:

=================  =================================  ======================================
                   source (GTA-like)                  target (Cityscapes-like)
=================  =================================  ======================================
palette            saturated, warm                    grey, desaturated, cool
lighting           bright sun, high contrast, shadows overcast, low contrast, vignette
texture / noise    flat surfaces, little noise        grainy surfaces, sensor noise, blur
objects            larger (x1.15), vivid cars         smaller (x0.85), dark and grey cars
details            lane markings                      ego-vehicle hood (label 1, ignored)
=================  =================================  ======================================

Every image of index i features one class (cycling over the 19) at a near depth, so each class
has files with many pixels, which rare class sampling requires. Scenes are drawn with OpenCV
polygon fills and NumPy array operations; there is no per-pixel Python loop.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .errors import DatasetError
from .io import process_is_running
from .labels import CITYSCAPES_LABELS
from .prepare import prepare_data_root

# Bump whenever the generated pixels change: existing copies are then rejected, not silently mixed.
GENERATOR_VERSION = 1
MARKER_FILE = "synthetic.json"
# Default sizes: GTA's aspect ratio for the source, Cityscapes' 2:1 for the target.
NUM_SOURCE, NUM_TARGET_TRAIN, NUM_TARGET_VAL = 200, 200, 50
SOURCE_SIZE, TARGET_SIZE = (480, 264), (512, 256)
DEFAULT_PARAMETERS: dict[str, int | list[int]] = {
    "generator_version": GENERATOR_VERSION,
    "seed": 0,
    "num_source": NUM_SOURCE,
    "num_target_train": NUM_TARGET_TRAIN,
    "num_target_val": NUM_TARGET_VAL,
    "source_size": list(SOURCE_SIZE),
    "target_size": list(TARGET_SIZE),
}

# Cityscapes label ids (not trainIds: the files hold raw ids, as GTA5 and Cityscapes do).
UNLABELED, EGO_VEHICLE, GROUND = 0, 1, 6
ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE = 7, 8, 11, 12, 13, 17
LIGHT, SIGN, VEGETATION, TERRAIN, SKY = 19, 20, 21, 22, 23
PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE = 24, 25, 26, 27, 28, 31, 32, 33

# The featured class of image i is FEATURED[i % 19] (trainId order).
FEATURED: tuple[int, ...] = (
    ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN,
    SKY, PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE,
)  # fmt: skip

TRAIN_CITIES: tuple[str, ...] = ("aachen", "bochum", "bremen", "cologne")
VAL_CITIES: tuple[str, ...] = ("frankfurt", "lindau", "munster")

Color = tuple[int, int, int]


@dataclass(frozen=True)
class DomainStyle:
    """Appearance of one domain.

    Attributes:
        palette: base RGB colour per Cityscapes label id.
        vehicle_colors: body colours of cars (trucks, buses and trains use the palette).
        clothing_colors: clothes of people and riders.
        color_jitter: relative standard deviation of the per-instance colour.
        texture_low: amplitude of blotchy low-frequency texture per label id (others: 4).
        texture_high: amplitude of per-pixel texture per label id (others: 2).
        contrast: contrast around mid-grey.
        gain: global brightness factor.
        tint: per-channel RGB factor (colour temperature).
        noise_std: sensor noise standard deviation (0..255 scale).
        blur_sigma: Gaussian blur sigma in pixels (0 = sharp).
        vignette: darkening of the corners (0 = none).
        shadows: cast dark shadow bands on the ground.
        object_scale: size factor of objects (vehicles, people, poles, trees).
        lane_markings: dashed white centre line.
        ego_vehicle: draw the recording car's hood at the bottom (label 1, ignored).
        window_period: (rows, columns) of the facade window grid, in pixels.
        window_darkness: factor applied to window pixels.
    """

    palette: dict[int, Color]
    vehicle_colors: tuple[Color, ...]
    clothing_colors: tuple[Color, ...]
    color_jitter: float
    texture_low: dict[int, float]
    texture_high: dict[int, float]
    contrast: float
    gain: float
    tint: tuple[float, float, float]
    noise_std: float
    blur_sigma: float
    vignette: float
    shadows: bool
    object_scale: float
    lane_markings: bool
    ego_vehicle: bool
    window_period: tuple[int, int]
    window_darkness: float


SOURCE_STYLE = DomainStyle(
    palette={
        GROUND: (150, 120, 90), ROAD: (105, 95, 120), SIDEWALK: (200, 150, 165),
        BUILDING: (185, 115, 80), WALL: (215, 200, 130), FENCE: (150, 100, 60),
        POLE: (95, 95, 110), LIGHT: (45, 45, 40), SIGN: (240, 205, 30),
        VEGETATION: (55, 170, 45), TERRAIN: (165, 205, 70), SKY: (95, 165, 250),
        PERSON: (230, 170, 130), RIDER: (230, 170, 130), TRUCK: (215, 215, 225),
        BUS: (225, 55, 35), TRAIN: (50, 110, 215), MOTORCYCLE: (35, 35, 40),
        BICYCLE: (210, 30, 40), EGO_VEHICLE: (40, 40, 40),
    },
    vehicle_colors=((220, 30, 30), (30, 80, 220), (240, 200, 20), (240, 240, 240),
                    (30, 170, 60), (245, 120, 20)),
    clothing_colors=((200, 30, 30), (30, 60, 200), (250, 220, 40), (40, 180, 80), (250, 250, 250)),
    color_jitter=0.06,
    texture_low={ROAD: 3.0, SIDEWALK: 3.0, BUILDING: 5.0, VEGETATION: 10.0, TERRAIN: 6.0, SKY: 2.0},
    texture_high={VEGETATION: 4.0, TERRAIN: 3.0},
    contrast=1.2,
    gain=1.08,
    tint=(1.06, 1.0, 0.9),
    noise_std=1.5,
    blur_sigma=0.0,
    vignette=0.0,
    shadows=True,
    object_scale=1.15,
    lane_markings=True,
    ego_vehicle=False,
    window_period=(14, 12),
    window_darkness=0.45,
)  # fmt: skip

TARGET_STYLE = DomainStyle(
    palette={
        GROUND: (110, 105, 95), ROAD: (80, 80, 84), SIDEWALK: (135, 130, 125),
        BUILDING: (125, 120, 115), WALL: (160, 155, 140), FENCE: (95, 100, 95),
        POLE: (70, 72, 75), LIGHT: (30, 30, 30), SIGN: (235, 235, 240),
        VEGETATION: (65, 90, 45), TERRAIN: (105, 120, 75), SKY: (205, 212, 220),
        PERSON: (200, 160, 135), RIDER: (200, 160, 135), TRUCK: (150, 155, 160),
        BUS: (235, 225, 90), TRAIN: (200, 200, 205), MOTORCYCLE: (60, 60, 65),
        BICYCLE: (45, 45, 50), EGO_VEHICLE: (30, 32, 38),
    },
    vehicle_colors=((25, 25, 28), (150, 150, 155), (200, 200, 205), (35, 45, 80), (90, 90, 95)),
    clothing_colors=((30, 30, 35), (70, 70, 80), (110, 90, 70), (45, 55, 90), (150, 150, 150)),
    color_jitter=0.05,
    texture_low={ROAD: 7.0, SIDEWALK: 8.0, BUILDING: 9.0, VEGETATION: 12.0, TERRAIN: 10.0,
                 SKY: 5.0},
    texture_high={ROAD: 6.0, SIDEWALK: 6.0, BUILDING: 4.0, VEGETATION: 10.0, TERRAIN: 8.0},
    contrast=0.8,
    gain=0.88,
    tint=(0.95, 1.0, 1.06),
    noise_std=7.0,
    blur_sigma=1.0,
    vignette=0.35,
    shadows=False,
    object_scale=0.85,
    lane_markings=False,
    ego_vehicle=True,
    window_period=(10, 9),
    window_darkness=0.7,
)  # fmt: skip


def _points(points: list[tuple[float, float]]) -> np.ndarray:
    return np.round(np.asarray(points, dtype=np.float64)).astype(np.int32).reshape(-1, 1, 2)


class _Canvas:
    """A label map of Cityscapes ids and a float RGB colour image drawn in lockstep."""

    def __init__(self, height: int, width: int) -> None:
        self.label = np.zeros((height, width), dtype=np.uint8)
        self.color = np.zeros((height, width, 3), dtype=np.float32)

    def polygon(
        self, points: list[tuple[float, float]], label_id: int | None, color: Color
    ) -> None:
        """Fill a polygon; ``label_id`` None paints colour only (a detail of the same object)."""
        contour = _points(points)
        if label_id is not None:
            cv2.fillPoly(self.label, [contour], int(label_id))
        cv2.fillPoly(self.color, [contour], tuple(float(c) for c in color))

    def rectangle(
        self, x0: float, y0: float, x1: float, y1: float, label_id: int | None, color: Color
    ) -> None:
        self.polygon([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], label_id, color)

    def ellipse(
        self,
        center: tuple[float, float],
        axes: tuple[float, float],
        label_id: int | None,
        color: Color,
        thickness: int = -1,
    ) -> None:
        c = (round(center[0]), round(center[1]))
        a = (max(1, round(axes[0])), max(1, round(axes[1])))
        if label_id is not None:
            cv2.ellipse(self.label, c, a, 0, 0, 360, int(label_id), thickness)
        cv2.ellipse(self.color, c, a, 0, 0, 360, tuple(float(v) for v in color), thickness)

    def line(
        self,
        p0: tuple[float, float],
        p1: tuple[float, float],
        label_id: int | None,
        color: Color,
        thickness: float,
    ) -> None:
        q0, q1 = (round(p0[0]), round(p0[1])), (round(p1[0]), round(p1[1]))
        width = max(1, round(thickness))
        if label_id is not None:
            cv2.line(self.label, q0, q1, int(label_id), width)
        cv2.line(self.color, q0, q1, tuple(float(v) for v in color), width)


class _SceneBuilder:
    """Draws one procedural street scene into a canvas.

    Geometry: the road runs from the bottom edge to a vanishing point on the horizon. A depth
    ``t`` in (0, 1] is the ground row ``horizon + t * (height - horizon)``; one metre at depth t is
    ``road_half * t / 3.5`` pixels (a road half-width is 3.5 m). Lateral positions ``u`` are in
    road half-widths: ``|u| < 1`` road, ``1..1+s`` sidewalk.
    """

    def __init__(
        self, rng: np.random.Generator, width: int, height: int, style: DomainStyle
    ) -> None:
        self.rng = rng
        self.width = width
        self.height = height
        self.style = style
        self.canvas = _Canvas(height, width)
        self.horizon = height * rng.uniform(0.36, 0.48)
        self.vanish_x = width * rng.uniform(0.4, 0.6)
        self.road_half = width * rng.uniform(0.32, 0.5)
        self.sidewalk = rng.uniform(0.3, 0.55)
        self.setback = (rng.uniform(0.0, 0.5), rng.uniform(0.0, 0.5))
        self.objects: list[tuple[float, Callable[[], None]]] = []

    # -- geometry ---------------------------------------------------------------------------
    def row(self, t: float) -> float:
        return self.horizon + t * (self.height - self.horizon)

    def x_at(self, t: float, u: float) -> float:
        return self.vanish_x + u * self.road_half * t

    def metre(self, t: float, scaled: bool = True) -> float:
        return self.road_half * t / 3.5 * (self.style.object_scale if scaled else 1.0)

    def color(self, label_id: int) -> Color:
        return self.jitter(self.style.palette[label_id])

    def jitter(self, color: Color) -> Color:
        factor = 1.0 + self.style.color_jitter * self.rng.standard_normal(3)
        return tuple(int(np.clip(c * f, 0, 255)) for c, f in zip(color, factor, strict=True))

    def pick(self, colors: tuple[Color, ...]) -> Color:
        return self.jitter(colors[self.rng.integers(len(colors))])

    # -- background -------------------------------------------------------------------------
    def draw_background(self, featured: int) -> None:
        c, w, h = self.canvas, self.width, self.height
        c.rectangle(0, 0, w, h, SKY, self.style.palette[SKY])
        c.rectangle(0, self.horizon, w, h, GROUND, self.color(GROUND))
        outer = 1.0 + self.sidewalk
        left_setback, right_setback = self.setback
        if featured == TERRAIN:
            left_setback = max(left_setback, 1.2)  # a wide grass strip on the left
        setbacks = (left_setback, right_setback)
        for side, setback in zip((-1, 1), setbacks, strict=True):
            far = side * (outer + setback)
            if setback > 0.05:
                c.polygon(
                    [
                        (self.x_at(0, 0), self.row(0)),
                        (self.x_at(2, side * outer), self.row(2)),
                        (self.x_at(2, far), self.row(2)),
                    ],
                    TERRAIN,
                    self.color(TERRAIN),
                )
        c.polygon(
            [(self.vanish_x, self.horizon), (self.x_at(1.0, -1), h), (self.x_at(1.0, 1), h)],
            ROAD,
            self.color(ROAD),
        )
        for side in (-1, 1):
            c.polygon(
                [
                    (self.vanish_x, self.horizon),
                    (self.x_at(1.0, side), h),
                    (self.x_at(1.0, side * outer), h),
                ],
                SIDEWALK,
                self.color(SIDEWALK),
            )
        if self.style.lane_markings:
            self.draw_lane_markings()
        for side, setback in zip((-1, 1), setbacks, strict=True):
            self.draw_facades(side, outer + setback, featured)

    def draw_lane_markings(self) -> None:
        t = 0.08
        half_width = 0.03  # in road half-widths, so the dashes narrow with depth
        while t < 1.0:
            t_end = min(t * 1.35, 1.0)
            self.canvas.polygon(
                [
                    (self.x_at(t, -half_width), self.row(t)),
                    (self.x_at(t, half_width), self.row(t)),
                    (self.x_at(t_end, half_width), self.row(t_end)),
                    (self.x_at(t_end, -half_width), self.row(t_end)),
                ],
                None,
                (235, 235, 225),
            )
            t = t_end * 1.3

    def ground_quad(
        self, u: float, t0: float, t1: float, height0: float, height1: float
    ) -> list[tuple[float, float]]:
        """Vertical quad standing on the line of lateral position u between depths t0 and t1."""
        return [
            (self.x_at(t0, u), self.row(t0)),
            (self.x_at(t1, u), self.row(t1)),
            (self.x_at(t1, u), self.row(t1) - height1),
            (self.x_at(t0, u), self.row(t0) - height0),
        ]

    def draw_facades(self, side: int, u: float, featured: int) -> None:
        rng = self.rng
        t = 0.03
        forced_gap = featured in (WALL, FENCE, VEGETATION)
        while t < 2.2:
            t_end = t * rng.uniform(1.3, 1.9) + 0.02
            near = t < 1.0 < t_end or 0.5 < t < 1.0
            kind = rng.choice(["building", "gap"], p=[0.72, 0.28])
            if forced_gap and near and side == -1:
                kind = "gap"
            if kind == "building":
                height = rng.uniform(8.0, 26.0)  # metres
                self.canvas.polygon(
                    self.ground_quad(
                        side * u,
                        t,
                        t_end,
                        height * self.metre(t, False),
                        height * self.metre(t_end, False),
                    ),
                    BUILDING,
                    self.color(BUILDING),
                )
            else:
                self.draw_gap(side, u, t, t_end, featured if (near and side == -1) else None)
            t = t_end

    def draw_gap(self, side: int, u: float, t0: float, t1: float, featured: int | None) -> None:
        rng = self.rng
        choice = rng.choice(["trees", "wall", "fence", "open"], p=[0.4, 0.2, 0.2, 0.2])
        if featured in (WALL, FENCE, VEGETATION):
            choice = {WALL: "wall", FENCE: "fence", VEGETATION: "trees"}[featured]
        if choice == "trees":
            for _ in range(int(rng.integers(1, 4))):
                t = rng.uniform(t0, t1)
                self.objects.append(
                    (t, partial(self.draw_tree, t, side * u, featured == VEGETATION))
                )
        elif choice in ("wall", "fence"):
            label_id = WALL if choice == "wall" else FENCE
            metres = rng.uniform(1.2, 2.5) * (1.6 if featured == label_id else 1.0)
            quad = self.ground_quad(
                side * u, t0, t1, metres * self.metre(t0, False), metres * self.metre(t1, False)
            )
            color = self.color(label_id)
            self.canvas.polygon(quad, label_id, color)
            if label_id == FENCE:
                # Vertical slats: colour detail only, the whole quad is fence.
                dark = tuple(int(v * 0.6) for v in color)
                for k in np.linspace(0, 1, 12):
                    t = t0 + (t1 - t0) * k
                    top = self.row(t) - metres * self.metre(t, False)
                    self.canvas.line(
                        (self.x_at(t, side * u), self.row(t)),
                        (self.x_at(t, side * u), top),
                        None,
                        dark,
                        max(1.0, 0.06 * self.metre(t, False)),
                    )

    # -- objects ----------------------------------------------------------------------------
    def draw_tree(self, t: float, u: float, big: bool) -> None:
        m = self.metre(t) * (1.5 if big else 1.0)
        x, y = self.x_at(t, u), self.row(t)
        trunk_height = self.rng.uniform(2.0, 3.5)
        crown = self.rng.uniform(1.8, 3.2)
        self.canvas.rectangle(
            x - 0.18 * m,
            y - trunk_height * m,
            x + 0.18 * m,
            y,
            VEGETATION,
            self.jitter((90, 65, 40)),
        )
        self.canvas.ellipse(
            (x, y - (trunk_height + crown * 0.8) * m),
            (crown * m, crown * 0.9 * m),
            VEGETATION,
            self.color(VEGETATION),
        )

    def draw_pole(self, t: float, u: float, attachment: str) -> None:
        m = self.metre(t)
        x, y = self.x_at(t, u), self.row(t)
        height = self.rng.uniform(4.0, 6.0)
        top = y - height * m
        self.canvas.rectangle(
            x - max(0.6, 0.09 * m), top, x + max(0.6, 0.09 * m), y, POLE, self.color(POLE)
        )
        if attachment == "light":
            box_w, box_h = 0.45 * m, 1.1 * m
            self.canvas.rectangle(
                x - box_w, top, x + box_w, top + 2 * box_h, LIGHT, self.color(LIGHT)
            )
            lamp_colors = ((255, 40, 30), (255, 190, 0), (40, 255, 90))
            lit = int(self.rng.integers(3))
            for k, lamp in enumerate(lamp_colors):
                shade = lamp if k == lit else tuple(int(v * 0.3) for v in lamp)
                self.canvas.ellipse(
                    (x, top + box_h * (0.4 + 0.6 * k)), (0.25 * m, 0.25 * m), None, shade
                )
        elif attachment == "sign":
            radius = 0.55 * m
            center = (x, top + radius)
            shape = self.rng.integers(3)
            color = self.color(SIGN)
            if shape == 0:
                self.canvas.ellipse(center, (radius, radius), SIGN, color)
                self.canvas.ellipse(
                    center,
                    (radius * 0.8, radius * 0.8),
                    None,
                    (200, 30, 30),
                    max(1, round(0.15 * radius)),
                )
            elif shape == 1:
                self.canvas.rectangle(x - radius, top, x + radius, top + 1.4 * radius, SIGN, color)
            else:
                self.canvas.polygon(
                    [(x - radius, top), (x + radius, top), (x, top + 1.7 * radius)], SIGN, color
                )

    def draw_person(self, t: float, u: float) -> None:
        m = self.metre(t)
        x, y = self.x_at(t, u), self.row(t)
        height = self.rng.uniform(1.6, 1.9) * m
        skin = self.jitter(self.style.palette[PERSON])
        shirt = self.pick(self.style.clothing_colors)
        trousers = self.pick(self.style.clothing_colors)
        head = 0.12 * height
        c = self.canvas
        c.rectangle(x - 0.12 * height, y - 0.5 * height, x - 0.01 * height, y, PERSON, trousers)
        c.rectangle(x + 0.01 * height, y - 0.5 * height, x + 0.12 * height, y, PERSON, trousers)
        c.rectangle(
            x - 0.15 * height,
            y - 0.85 * height,
            x + 0.15 * height,
            y - 0.48 * height,
            PERSON,
            shirt,
        )
        c.ellipse((x, y - 0.85 * height - head * 0.9), (head * 0.8, head), PERSON, skin)

    def draw_car(self, t: float, u: float, label_id: int = CAR) -> None:
        m = self.metre(t)
        x, y = self.x_at(t, u), self.row(t)
        dims = {CAR: (1.8, 1.5), TRUCK: (2.4, 3.3), BUS: (2.5, 3.1), TRAIN: (2.8, 3.8)}[label_id]
        width, height = dims[0] * m, dims[1] * m
        body = self.pick(self.style.vehicle_colors) if label_id == CAR else self.color(label_id)
        glass = (40, 55, 70)
        c = self.canvas
        if label_id == CAR:
            c.rectangle(
                x - width / 2, y - 0.6 * height, x + width / 2, y - 0.12 * height, CAR, body
            )
            c.polygon(
                [
                    (x - 0.4 * width, y - 0.6 * height),
                    (x + 0.4 * width, y - 0.6 * height),
                    (x + 0.3 * width, y - height),
                    (x - 0.3 * width, y - height),
                ],
                CAR,
                body,
            )
            c.polygon(
                [
                    (x - 0.33 * width, y - 0.62 * height),
                    (x + 0.33 * width, y - 0.62 * height),
                    (x + 0.26 * width, y - 0.93 * height),
                    (x - 0.26 * width, y - 0.93 * height),
                ],
                None,
                glass,
            )
        else:
            c.rectangle(x - width / 2, y - height, x + width / 2, y - 0.1 * height, label_id, body)
            c.rectangle(
                x - 0.42 * width, y - 0.92 * height, x + 0.42 * width, y - 0.6 * height, None, glass
            )
        for wheel_x in (x - 0.36 * width, x + 0.36 * width):
            c.ellipse(
                (wheel_x, y - 0.1 * height), (0.12 * width, 0.1 * height), label_id, (20, 20, 20)
            )
        lamp = (255, 60, 40)
        for lamp_x in (x - 0.42 * width, x + 0.42 * width):
            c.rectangle(
                lamp_x - 0.05 * width,
                y - 0.4 * height,
                lamp_x + 0.05 * width,
                y - 0.32 * height,
                None,
                lamp,
            )

    def draw_motorcycle(self, t: float, u: float) -> None:
        m = self.metre(t)
        x, y = self.x_at(t, u), self.row(t)
        c = self.canvas
        c.rectangle(
            x - 0.3 * m, y - 1.05 * m, x + 0.3 * m, y - 0.25 * m, MOTORCYCLE, self.color(MOTORCYCLE)
        )
        c.ellipse((x, y - 0.3 * m), (0.12 * m, 0.3 * m), MOTORCYCLE, (20, 20, 20))
        c.rectangle(
            x - 0.45 * m, y - 1.05 * m, x + 0.45 * m, y - 0.95 * m, MOTORCYCLE, (60, 60, 60)
        )
        self.draw_rider(x, y - 0.8 * m, m)

    def draw_bicycle(self, t: float, u: float, with_rider: bool = True) -> None:
        m = self.metre(t)
        x, y = self.x_at(t, u), self.row(t)
        radius = 0.34 * m
        color = self.color(BICYCLE)
        thickness = max(1.0, 0.07 * m)
        c = self.canvas
        rear, front = (x - 0.55 * m, y - radius), (x + 0.55 * m, y - radius)
        for wheel in (rear, front):
            c.ellipse(wheel, (radius, radius), BICYCLE, color, max(1, round(thickness)))
        seat, bar = (x - 0.15 * m, y - 0.95 * m), (x + 0.4 * m, y - 1.0 * m)
        for p0, p1 in (
            (rear, seat),
            (seat, (x + 0.05 * m, y - radius)),
            (rear, (x + 0.05 * m, y - radius)),
            ((x + 0.05 * m, y - radius), bar),
            (bar, front),
            (seat, bar),
        ):
            c.line(p0, p1, BICYCLE, color, thickness)
        if with_rider:
            self.draw_rider(x - 0.1 * m, y - 0.75 * m, m)

    def draw_rider(self, x: float, seat_y: float, m: float) -> None:
        c = self.canvas
        shirt = self.pick(self.style.clothing_colors)
        c.rectangle(x - 0.22 * m, seat_y - 0.75 * m, x + 0.22 * m, seat_y, RIDER, shirt)
        c.rectangle(
            x - 0.2 * m,
            seat_y - 0.1 * m,
            x + 0.2 * m,
            seat_y + 0.45 * m,
            RIDER,
            self.pick(self.style.clothing_colors),
        )
        c.ellipse(
            (x, seat_y - 0.95 * m),
            (0.17 * m, 0.2 * m),
            RIDER,
            self.jitter(self.style.palette[RIDER]),
        )

    def place_objects(self, featured: int) -> None:
        rng = self.rng
        outer = 1.0 + self.sidewalk

        def sidewalk_u() -> float:
            return float(rng.choice([-1, 1]) * (1.0 + self.sidewalk * rng.uniform(0.3, 0.8)))

        def lane_u() -> float:
            return float(rng.choice([-0.5, 0.5]) + rng.uniform(-0.12, 0.12))

        def depth(near: bool = False) -> float:
            return float(rng.uniform(0.6, 0.95) if near else rng.uniform(0.12, 1.0) ** 0.8)

        def add(t: float, draw: Callable[..., None], *args: object) -> None:
            self.objects.append((t, partial(draw, t, *args)))

        for _ in range(int(rng.integers(1, 5))):
            add(depth(), self.draw_car, lane_u())
        for _ in range(int(rng.integers(0, 5))):
            add(depth(), self.draw_person, sidewalk_u())
        for _ in range(int(rng.integers(1, 5))):
            kind = str(rng.choice(["light", "sign", "plain"], p=[0.35, 0.4, 0.25]))
            add(depth(), self.draw_pole, sidewalk_u(), kind)
        for _ in range(int(rng.integers(0, 3))):
            add(depth(), self.draw_tree, float(rng.choice([-1, 1])) * outer * 0.98, False)
        extras = ((TRUCK, 0.2), (BUS, 0.2), (TRAIN, 0.06), (MOTORCYCLE, 0.25), (BICYCLE, 0.3))
        chosen = [label_id for label_id, p in extras if rng.random() < p]
        if featured in (
            PERSON,
            CAR,
            TRUCK,
            BUS,
            TRAIN,
            MOTORCYCLE,
            BICYCLE,
            RIDER,
            POLE,
            LIGHT,
            SIGN,
        ):
            chosen.append(featured)
        for label_id in chosen:
            t = depth(near=label_id == featured)
            if label_id in (TRUCK, BUS, CAR):
                add(t, self.draw_car, lane_u(), label_id)
            elif label_id == TRAIN:
                add(t, self.draw_car, 0.0, TRAIN)  # a tram in the middle of the road
            elif label_id in (MOTORCYCLE, RIDER):
                add(t, self.draw_motorcycle, lane_u())
            elif label_id == BICYCLE:
                add(t, self.draw_bicycle, float(rng.choice([-0.85, 0.85])))
            elif label_id == PERSON:
                add(t, self.draw_person, sidewalk_u())
            else:
                kind = {POLE: "plain", LIGHT: "light", SIGN: "sign"}[label_id]
                add(t, self.draw_pole, sidewalk_u(), kind)

    def draw_objects(self) -> None:
        # Painter's algorithm: far (small t) first, so nearer objects occlude them.
        for _, draw in sorted(self.objects, key=lambda item: item[0]):
            draw()

    def draw_ego_vehicle(self) -> None:
        w, h = self.width, self.height
        depth = h * self.rng.uniform(0.1, 0.14)
        self.canvas.polygon(
            [
                (0, h),
                (0, h - 0.55 * depth),
                (0.2 * w, h - 0.9 * depth),
                (0.5 * w, h - depth),
                (0.8 * w, h - 0.9 * depth),
                (w, h - 0.55 * depth),
                (w, h),
            ],
            EGO_VEHICLE,
            self.color(EGO_VEHICLE),
        )
        # The hood's specular highlight, as on the Cityscapes recording car.
        self.canvas.line(
            (0.3 * w, h - 0.8 * depth),
            (0.7 * w, h - 0.8 * depth),
            None,
            (120, 125, 135),
            max(1.0, 0.08 * depth),
        )


def _unit_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Zero-mean, unit-variance uniform noise (float32 uniforms are ~4x cheaper than normals)."""
    return (rng.random(shape, dtype=np.float32) - 0.5) * np.float32(np.sqrt(12.0))


def _render(
    canvas: _Canvas, style: DomainStyle, rng: np.random.Generator, horizon: float
) -> np.ndarray:
    """Turn the flat-coloured canvas into the domain's final RGB image (uint8 H×W×3)."""
    label = canvas.label
    height, width = label.shape
    low_lut = np.full(256, 4.0, dtype=np.float32)
    high_lut = np.full(256, 2.0, dtype=np.float32)
    for label_id, amplitude in style.texture_low.items():
        low_lut[label_id] = amplitude
    for label_id, amplitude in style.texture_high.items():
        high_lut[label_id] = amplitude
    coarse = rng.standard_normal((height // 12 + 2, width // 12 + 2)).astype(np.float32)
    low = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    offset = low_lut[label] * low + high_lut[label] * _unit_noise(rng, (height, width))

    rows = np.arange(height, dtype=np.float32)[:, None]
    columns = np.arange(width, dtype=np.float32)[None, :]
    sky = label == SKY
    # Sky brightens towards the horizon.
    offset += np.where(sky, 30.0 * np.clip(rows / max(horizon, 1.0), 0.0, 1.0), 0.0).astype(
        np.float32
    )
    # Windows: a regular grid darkening part of every facade.
    period_y, period_x = style.window_period
    windows = ((rows % period_y) < period_y * 0.55) & ((columns % period_x) < period_x * 0.5)
    factor = np.where((label == BUILDING) & windows, style.window_darkness, 1.0).astype(np.float32)
    if style.shadows:
        # Cast shadows: darker diagonal bands on everything below the horizon.
        angle = rng.uniform(0.5, 1.5)
        band = (
            np.sin((columns + angle * rows) / rng.uniform(25.0, 60.0) + rng.uniform(0, 6.28)) > 0.6
        )
        factor *= np.where(band & (rows > horizon), 0.6, 1.0).astype(np.float32)
    if style.vignette > 0:
        radius = ((rows / height - 0.5) ** 2 + (columns / width - 0.5) ** 2) / 0.5
        factor *= 1.0 - style.vignette * radius
    color = (canvas.color + offset[..., None]) * factor[..., None]
    color = (color - 128.0) * style.contrast + 128.0
    color *= style.gain * np.asarray(style.tint, dtype=np.float32)
    if style.blur_sigma > 0:
        color = cv2.GaussianBlur(color, (0, 0), style.blur_sigma)
    color += style.noise_std * _unit_noise(rng, color.shape)
    return np.clip(color + 0.5, 0, 255).astype(np.uint8)


def render_scene(
    rng: np.random.Generator, width: int, height: int, style: DomainStyle, featured: int
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one street scene.

    Args:
        rng: the scene's random stream.
        width: image width.
        height: image height.
        style: the domain's appearance.
        featured: a Cityscapes label id drawn large and near (any id of :data:`FEATURED`).

    Returns:
        ``(image, label)``: uint8 RGB H×W×3 and uint8 Cityscapes label ids H×W.
    """
    scene = _SceneBuilder(rng, width, height, style)
    scene.draw_background(featured)
    scene.place_objects(featured)
    scene.draw_objects()
    if style.ego_vehicle:
        scene.draw_ego_vehicle()
    image = _render(scene.canvas, style, rng, scene.horizon)
    return image, scene.canvas.label


def _cityscapes_palette() -> list[int]:
    palette = [0] * (256 * 3)
    for label in CITYSCAPES_LABELS:
        palette[3 * label.id : 3 * label.id + 3] = label.color
    return palette


_CITYSCAPES_PALETTE = _cityscapes_palette()


def _write_rgb(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise DatasetError(f"cannot write {path}")


def _scene_rng(seed: int, domain: int, split: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(domain, split, index)))


@dataclass(frozen=True)
class _ImageJob:
    """One image to generate: a pure function of its fields."""

    root: Path
    seed: int
    domain: int  # 0 source (GTA format), 1 target (Cityscapes format)
    split: str
    index: int
    size: tuple[int, int]


def _generate_image(job: _ImageJob) -> None:
    split_id = 0 if job.split == "train" else 1
    featured = FEATURED[job.index % len(FEATURED)]
    rng = _scene_rng(job.seed, job.domain, split_id, job.index)
    if job.domain == 0:
        image, label = render_scene(rng, *job.size, SOURCE_STYLE, featured)
        _write_rgb(job.root / "gta" / "images" / f"{job.index:05d}.png", image)
        label_path = job.root / "gta" / "labels" / f"{job.index:05d}.png"
        label_path.parent.mkdir(parents=True, exist_ok=True)
        # GTA5 labels are palette PNGs whose indices are Cityscapes label ids.
        label_image = Image.fromarray(label, mode="P")
        label_image.putpalette(_CITYSCAPES_PALETTE)
        label_image.save(label_path)
        return
    image, label = render_scene(rng, *job.size, TARGET_STYLE, featured)
    cities = TRAIN_CITIES if job.split == "train" else VAL_CITIES
    city = cities[job.index % len(cities)]
    stem = f"{city}_{job.index:06d}_000019"  # Cityscapes' annotated frame is the 20th (000019)
    _write_rgb(
        job.root / "cityscapes" / "leftImg8bit" / job.split / city / f"{stem}_leftImg8bit.png",
        image,
    )
    label_path = (
        job.root / "cityscapes" / "gtFine" / job.split / city / f"{stem}_gtFine_labelIds.png"
    )
    label_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(label, mode="L").save(label_path)


def generate_synthetic_dataset(
    root: Path,
    seed: int = 0,
    num_source: int = NUM_SOURCE,
    num_target_train: int = NUM_TARGET_TRAIN,
    num_target_val: int = NUM_TARGET_VAL,
    source_size: tuple[int, int] = SOURCE_SIZE,
    target_size: tuple[int, int] = TARGET_SIZE,
    nproc: int = 1,
) -> None:
    """Write the raw files of both domains under ``root`` (no conversion, no marker).

    Args:
        root: output folder; ``gta/`` and ``cityscapes/`` are created inside.
        seed: every image is a pure function of (seed, domain, split, index).
        num_source: source images.
        num_target_train: target training images.
        num_target_val: target validation images.
        source_size: (width, height) of the source images.
        target_size: (width, height) of the target images.
        nproc: worker processes (the output does not depend on it).
    """
    jobs = (
        [_ImageJob(root, seed, 0, "train", i, source_size) for i in range(num_source)]
        + [_ImageJob(root, seed, 1, "train", i, target_size) for i in range(num_target_train)]
        + [_ImageJob(root, seed, 1, "val", i, target_size) for i in range(num_target_val)]
    )
    if nproc <= 1:
        for job in jobs:
            _generate_image(job)
        return
    with multiprocessing.get_context().Pool(nproc) as pool:
        for _ in pool.imap_unordered(_generate_image, jobs, chunksize=8):
            pass


def _remove_abandoned_partials(root: Path) -> None:
    """Delete half-generated folders of processes that no longer run."""
    for leftover in root.parent.glob(f".{root.name}.partial-*"):
        pid = leftover.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not process_is_running(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)


def ensure_synthetic_dataset(
    root: Path,
    seed: int = 0,
    num_source: int | None = None,
    num_target_train: int | None = None,
    num_target_val: int | None = None,
    source_size: tuple[int, int] | None = None,
    target_size: tuple[int, int] | None = None,
    nproc: int = min(4, os.cpu_count() or 1),
) -> Path:
    """Generate and prepare the synthetic dataset under ``root`` unless it is already there.

    The dataset is generated and prepared in a hidden sibling folder, then renamed to ``root``, so
    an interrupted run never leaves a partial dataset, and concurrent callers (e.g. DDP ranks)
    agree on one copy. ``root/synthetic.json`` records the parameters. An existing dataset is
    accepted when its seed and every parameter given explicitly match; parameters left at None
    take the defaults (200 / 200 / 50 images, 480×264 source, 512×256 target) when generating and
    accept any recorded value otherwise. The (idempotent, fast) prepare step then runs again, so a
    deleted statistics file is rebuilt.

    Args:
        root: the dataset folder (``root/gta``, ``root/cityscapes``).
        seed: generation seed.
        num_source: source images (GTA format).
        num_target_train: target training images (Cityscapes ``train``).
        num_target_val: target validation images (Cityscapes ``val``).
        source_size: (width, height) of source images.
        target_size: (width, height) of target images.
        nproc: processes for generation and the prepare step.

    Returns:
        ``root``.

    Raises:
        DatasetError: ``root`` holds something else, or a synthetic dataset made with other
            parameters.
    """
    root = Path(root)
    requested = {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "num_source": num_source,
        "num_target_train": num_target_train,
        "num_target_val": num_target_val,
        "source_size": list(source_size) if source_size is not None else None,
        "target_size": list(target_size) if target_size is not None else None,
    }
    marker = root / MARKER_FILE
    if not marker.is_file():
        params = {
            key: DEFAULT_PARAMETERS[key] if value is None else value
            for key, value in requested.items()
        }
        _generate_into(root, params, nproc)
    existing = json.loads(marker.read_text())
    mismatched = {
        key: (existing.get(key), value)
        for key, value in requested.items()
        if value is not None and existing.get(key) != value
    }
    if mismatched:
        details = ", ".join(
            f"{key} {found} (wanted {wanted})" for key, (found, wanted) in mismatched.items()
        )
        raise DatasetError(
            f"{root} holds a synthetic dataset generated with other parameters: {details}; "
            "delete it or use another folder"
        )
    prepare_data_root(root, nproc=nproc, progress=False, log=lambda _: None)
    return root


def _generate_into(root: Path, params: dict, nproc: int) -> None:
    """Generate and prepare in a hidden sibling folder, then rename it to ``root``."""
    if root.exists() and any(root.iterdir()):
        raise DatasetError(
            f"{root} exists but holds no synthetic dataset (no {MARKER_FILE}); "
            "choose an empty or new folder"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_partials(root)
    partial = root.parent / f".{root.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        generate_synthetic_dataset(
            partial,
            params["seed"],
            params["num_source"],
            params["num_target_train"],
            params["num_target_val"],
            tuple(params["source_size"]),
            tuple(params["target_size"]),
            nproc,
        )
        prepare_data_root(partial, nproc=nproc, progress=False, log=lambda _: None)
        (partial / MARKER_FILE).write_text(json.dumps(params, indent=2))
        try:
            os.rename(partial, root)
        except OSError:
            if not (root / MARKER_FILE).is_file():  # not a concurrent caller that finished first
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
