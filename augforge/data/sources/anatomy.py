"""Procedural axial chest-CT anatomy in Hounsfield units: the background of the lidc-phantom slices.

A slice is drawn on a square field of view of ``FOV_MM`` (patient supine, anterior at the top, the
patient's right on the image left, as radiologists read CT). Everything is vectorised numpy /
OpenCV on the target grid (plus a 2x grid for the thin vessels), about 10 ms for 256x256.

Layers, outside in: air (-1000) and the scanner's circular reconstruction field (padding -1024);
the table (carbon-fibre skins around a foam core); skin and subcutaneous fat (-100); chest-wall
muscle (+50) with ribs, costal cartilage, sternum, scapulae and the spine (cortical bone
+600..1000 around marrow +200..350); the mediastinum (fat holding, by level, the great vessels and
trachea, the aorta, pulmonary trunk and main bronchi, or the heart); two lungs of parenchyma
(about -870, denser posteriorly where blood pools in a supine patient) with low-frequency
texture, vessels branching from the hila and tapering outwards, vessel cross-sections, fissures.
A third of the slices have IV contrast (blood +150..280 instead of +30..48).

The caller adds the nodule, then :func:`finish` applies the scanner's blur and correlated noise and
rounds to integer HU.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

#: Side of the square field of view (mm). The phantom's pixel spacing is ``FOV_MM / size``.
FOV_MM = 360.0

AIR_HU = -1000.0
PADDING_HU = -1024.0  # outside the reconstruction circle (what scanners write there)
FAT_HU = -100.0
MUSCLE_HU = 50.0


@dataclass
class ChestSlice:
    """One anatomy slice before the nodule and the scanner model.

    hu:     (H, W) float32 HU, without blur or noise.
    lung:   (H, W) bool, the lung parenchyma (vessels included): where nodules may go.
    params: the sampled anatomy parameters (JSON values), kept in the slice's provenance.
    """

    hu: np.ndarray
    lung: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)


@functools.lru_cache(maxsize=8)
def _axis(size: int) -> np.ndarray:
    """Pixel-centre coordinates along one axis, mm from the centre of the field of view: (size,)."""
    return ((np.arange(size, dtype=np.float32) + 0.5) - size / 2) * np.float32(FOV_MM / size)


@functools.lru_cache(maxsize=8)
def _inside_fov(size: int) -> np.ndarray:
    v = _axis(size)
    return (v[None, :] ** 2 + v[:, None] ** 2) <= (FOV_MM / 2) ** 2


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Band-limited noise (size, size) float32, about unit variance, ``cells`` blobs per side: a coarse
    random grid upsampled bicubically."""
    coarse = rng.standard_normal((cells + 3, cells + 3)).astype(np.float32)
    big = size + 3 * max(size // cells, 1)
    up = cv2.resize(coarse, (big, big), interpolation=cv2.INTER_CUBIC)
    off = (big - size) // 2
    # Bicubic upsampling of unit white noise keeps ~0.6 of its variance: undo that on average.
    return up[off : off + size, off : off + size] * np.float32(1.3)


def _superellipse(
    size: int, cx: float, cy: float, a: float, b_ant: float, b_post: float, p_ant: float, p_post: float
) -> np.ndarray:
    """Superellipse level |dx/a|^p + |dy/b|^p (size, size) float32: <= 1 inside. The anterior and
    posterior halves differ (a supine patient's back is flattened by the table). Built from 1-D
    terms broadcast over rows and columns, because the exponent is constant per row."""
    v = _axis(size)
    dx = np.abs(v - cx) / a
    post = v > cy
    dy = np.abs(v - cy) / np.where(post, b_post, b_ant)
    out = np.empty((size, size), np.float32)
    for rows, p in ((~post, p_ant), (post, p_post)):
        out[rows] = (dx**p)[None, :] + (dy[rows] ** p)[:, None]
    return out


def _superellipse_point(theta: float, cx: float, cy: float, a: float, b: float, p: float) -> tuple[float, float]:
    c, s = math.cos(theta), math.sin(theta)
    return cx + a * math.copysign(abs(c) ** (2 / p), c), cy + b * math.copysign(abs(s) ** (2 / p), s)


@functools.lru_cache(maxsize=32)
def _disc(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


class _Painter:
    """Draws filled shapes given in mm into an (H, W) float32 image, with sub-pixel precision."""

    SHIFT = 4  # OpenCV fixed-point bits: coordinates in 1/16 pixel

    def __init__(self, img: np.ndarray, spacing: float) -> None:
        self.img, self.s, self.n = img, spacing, img.shape[0]

    def px(self, x: float, y: float) -> tuple[int, int]:
        k = 1 << self.SHIFT
        return (round((x / self.s + self.n / 2 - 0.5) * k), round((y / self.s + self.n / 2 - 0.5) * k))

    def ellipse(
        self, x: float, y: float, ax: float, ay: float, angle_deg: float, value: float, img: np.ndarray | None = None
    ) -> None:
        k = 1 << self.SHIFT
        axes = (max(round(ax / self.s * k), 1), max(round(ay / self.s * k), 1))
        cv2.ellipse(
            self.img if img is None else img,
            self.px(x, y),
            axes,
            angle_deg,
            0,
            360,
            float(value),
            -1,
            cv2.LINE_8,
            self.SHIFT,
        )

    def bone(
        self,
        x: float,
        y: float,
        ax: float,
        ay: float,
        angle_deg: float,
        cortex_hu: float,
        marrow_hu: float,
        cortex_mm: float = 1.5,
    ) -> None:
        """An oval bone cross-section: a cortical shell around cancellous marrow."""
        self.ellipse(x, y, ax, ay, angle_deg, cortex_hu)
        if min(ax, ay) > cortex_mm * 1.2:
            self.ellipse(x, y, ax - cortex_mm, ay - cortex_mm, angle_deg, marrow_hu)

    def line(
        self, x0: float, y0: float, x1: float, y1: float, width_mm: float, value: float, img: np.ndarray | None = None
    ) -> None:
        cv2.line(
            self.img if img is None else img,
            self.px(x0, y0),
            self.px(x1, y1),
            float(value),
            max(round(width_mm / self.s), 1),
            cv2.LINE_8,
            self.SHIFT,
        )


def chest_slice(size: int, rng: np.random.Generator) -> ChestSlice:
    """Draw one axial chest slice (``size`` x ``size`` pixels of ``FOV_MM / size`` mm)."""
    s = FOV_MM / size
    v = _axis(size)
    X, Y = v[None, :], v[:, None]  # broadcast as (1, W) and (H, 1)
    u = rng.uniform
    hu = np.full((size, size), AIR_HU, dtype=np.float32)
    paint = _Painter(hu, s)
    shape_noise = smooth_noise(rng, size, 6)  # one field deforms every outline alike, like a body
    tex_coarse = smooth_noise(rng, size, 10)
    tex_fine = smooth_noise(rng, size, 40)

    # Cranio-caudal level: 0 = lung apex (great vessels, trachea), 1 = lung base (heart).
    level = u(0.2, 0.9)
    contrast = bool(rng.random() < 0.3)
    blood = u(150, 280) if contrast else u(30, 48)

    # 1. Body: a superellipse, wider than deep, flattened where the back meets the table.
    a_body, b_ant, b_post, cy = u(148, 172), u(98, 120), u(88, 105), u(-18, -6)
    body = _superellipse(size, 0.0, cy, a_body, b_ant, b_post, 2.0, 3.2) + 0.03 * shape_noise <= 1.0
    back_y = cy + b_post

    # 2. Table under the back: a shallow curved plate, carbon-fibre skins around a foam core.
    depth = Y - (back_y + u(1, 6) - (X / 250.0) ** 2 * u(20, 40))
    plate = (depth >= 0) & (depth < u(28, 36)) & ~body
    np.copyto(hu, np.float32(u(-950, -880)), where=plate)
    skins = plate & ((depth < 2.0) | (depth >= depth[plate].max() - 2.0)) if plate.any() else plate
    np.copyto(hu, np.float32(u(40, 160)), where=skins)

    # 3. Subcutaneous fat with skin, chest-wall muscle, the thoracic cavity inside it.
    fat, wall = u(5, 20), u(8, 12)
    pect = u(3, 14) * (1.0 - 0.5 * level)  # pectoral muscles thin towards the base
    np.copyto(hu, FAT_HU + 10 * tex_fine, where=body)
    inner = _superellipse(size, 0.0, cy, a_body - 2, b_ant - 2, b_post - 2, 2.0, 3.2) + 0.03 * shape_noise
    np.copyto(hu, np.float32(u(20, 50)), where=body & (inner > 1.0))
    m_a, m_ba, m_bp = a_body - fat, b_ant - fat * 0.8, b_post - fat * 0.6
    muscle = _superellipse(size, 0.0, cy, m_a, m_ba, m_bp, 2.0, 3.2) + 0.03 * shape_noise <= 1.0
    np.copyto(hu, np.float32(MUSCLE_HU) + 6 * tex_coarse, where=muscle)
    c_a, c_ba, c_bp = m_a - wall, m_ba - wall - pect, m_bp - wall - u(16, 24)
    cav_cy = cy + u(-3, 3)
    cavity = _superellipse(size, 0.0, cav_cy, c_a, c_ba, c_bp, 2.2, 2.8) + 0.04 * shape_noise <= 1.0
    cavity &= muscle
    ant_y, post_y = cav_cy - c_ba, cav_cy + c_bp

    # 4. Spine: the vertebral body bulges into the cavity; canal, laminae, spinous and transverse
    # processes behind it. The lungs wrap round it into the paravertebral gutters.
    rv = u(13, 18)
    vb_y = post_y - rv * u(0.5, 0.9)
    canal_y = vb_y + rv + u(6, 9)
    spine_zone = (X / (rv * 1.3)) ** 2 + ((Y - vb_y) / (rv * 1.3)) ** 2 <= 1.0
    spine_zone |= (np.abs(X) < rv * 0.9) & (Y > vb_y)
    bone_hu = u(600, 800)
    paint.bone(0.0, vb_y, rv, rv * u(0.85, 0.95), 0.0, bone_hu, u(180, 300), cortex_mm=2.0)
    for side in (-1, 1):
        paint.line(side * 6, canal_y, side * 11, canal_y + 10, 5.0, bone_hu)  # lamina
        paint.line(side * rv * 0.8, canal_y - 2, side * (rv + 18), canal_y + u(2, 8), 6.0, bone_hu - 100)
    paint.line(0.0, canal_y + 8, 0.0, canal_y + u(25, 35), 5.0, bone_hu)  # spinous process
    paint.ellipse(0.0, canal_y, u(6, 8), u(6, 8), 0.0, u(20, 35))  # canal and cord

    # 5. Mediastinum: fat holding the organs of this level; the lungs take the rest of the cavity.
    organs = np.zeros_like(hu)  # where a mediastinal organ is (1), with its fat margin added below
    med_hu = np.full_like(hu, FAT_HU)
    med = _Painter(med_hu, s)

    def organ(x: float, y: float, rx: float, ry: float, value: float, angle: float = 0.0) -> None:
        med.ellipse(x, y, rx, ry, angle, value)
        med.ellipse(x, y, rx, ry, angle, 1.0, img=organs)

    mid_y = 0.5 * (ant_y + vb_y)
    airways = []  # (x, y, radius) of the trachea or main bronchi
    if level < 0.45:
        airways.append((u(-3, 3), vb_y - rv - u(10, 14), u(7, 10)))
        if level > 0.32:  # the aortic arch, an oblique sausage from front-right to back-left
            width = u(22, 28)
            for img in (med_hu, organs):
                med.line(-15, ant_y + 30, 22, vb_y - 8, width, blood if img is med_hu else 1.0, img=img)
        else:  # great vessels around the trachea
            for vx, vy, vr in ((-14, -14, 8), (0, -22, 6), (12, -16, 7), (-22, -4, 9)):
                r = vr * u(0.8, 1.2)
                organ(vx + u(-3, 3), airways[0][1] + vy + u(-3, 3), r, r, blood)
    elif level < 0.62:
        by = vb_y - rv - u(8, 12)
        airways += [(-u(12, 16), by, u(5, 7)), (u(12, 16), by + 2, u(5, 7))]
        for x, y, r in (
            (-u(14, 22), ant_y + u(28, 36), u(13, 17)),  # ascending aorta
            (u(16, 22), vb_y - u(0, 8), u(10, 13)),  # descending aorta
            (u(10, 22), ant_y + u(30, 40), u(12, 15)),  # pulmonary trunk
            (-u(32, 38), ant_y + u(36, 44), u(8, 10)),
        ):  # superior vena cava
            organ(x, y, r, r, blood)
    else:
        # Heart, tilted to the patient's left, in a rim of epicardial fat; descending aorta.
        hx, hy = u(12, 30), mid_y + u(-8, 8)
        hax, hay, ang = u(48, 66) * (0.6 + 0.5 * level), u(38, 52), u(20, 40)
        med.ellipse(hx, hy, hax + 4, hay + 4, ang, 1.0, img=organs)
        myocardium = (blood + 5) if not contrast else u(90, 130)
        med.ellipse(hx, hy, hax, hay, ang, myocardium)
        if contrast:  # contrasted chambers inside the myocardium
            med.ellipse(hx, hy, hax - 9, hay - 9, ang, blood)
        r = u(10, 13)
        organ(u(16, 22), vb_y - u(0, 6), r, r, blood)
    ex, ey = u(2, 8), vb_y - rv - u(2, 5)  # oesophagus: in front of the spine, slightly left
    organ(ex, ey, 7, 6, MUSCLE_HU - 10)
    for x, y, r in airways:
        organ(x, y, r + 1.8, r + 1.8, MUSCLE_HU - 10)  # cartilage wall
        med.ellipse(x, y, r, r, 0, AIR_HU)
    if rng.random() < 0.4:
        med.ellipse(ex, ey, 1.5, 1.5, 0, AIR_HU)

    # The mediastinal envelope: a central band (wide at the heart) plus the organs with 4 mm of fat.
    band = u(8, 16) + (u(18, 30) if level >= 0.62 else u(6, 14)) * np.exp(
        -(((Y - mid_y) / (0.45 * (post_y - ant_y))) ** 2)
    )
    shift = 8.0 * level * np.exp(-(((Y - mid_y) / 60.0) ** 2))
    mediastinum = np.abs(X - shift) < band
    mediastinum |= cv2.dilate((organs > 0).astype(np.uint8), _disc(max(round(4 / s), 1))) > 0
    mediastinum &= cavity & (Y < vb_y + rv)  # behind the spine the lungs meet the gutters
    spine_margin = cv2.dilate(spine_zone.astype(np.uint8), _disc(max(round(3 / s), 1))) > 0
    lungs = cavity & ~mediastinum & ~spine_margin & _inside_fov(size)
    np.copyto(hu, med_hu, where=mediastinum & ~spine_zone)
    if level > 0.75 and rng.random() < (level - 0.7) / 0.3:
        # Near the base the right hemidiaphragm domes up: the top of the liver, under the lung.
        grow = (level - 0.7) / 0.3
        dome = ((X + c_a * u(0.4, 0.55)) / (c_a * 0.45 * grow + 10)) ** 2 + (
            (Y - post_y + c_bp * u(0.1, 0.25)) / (c_bp * 0.6 * grow + 10)
        ) ** 2 <= 1.0
        dome &= cavity & (X < 0) & ~mediastinum
        np.copyto(hu, np.float32(u(50, 65)) + 5 * tex_coarse, where=dome)
        lungs &= ~dome
    # Lung boundary against the cavity wall and spine margin: parietal pleura over muscle.
    np.copyto(hu, np.float32(MUSCLE_HU), where=cavity & ~lungs & ~mediastinum & ~spine_zone)

    # 6. Parenchyma: dependent density gradient and texture at two scales.
    grad = np.clip((Y - ant_y) / max(post_y - ant_y, 1.0), 0, 1) ** 2
    paren = u(-890, -860) + u(30, 70) * grad + 14 * tex_coarse + 8 * tex_fine
    np.copyto(hu, paren, where=lungs)

    # 7. Vessels on a 2x grid, so that thin ones come out as partial-volume grey: a tree from each
    # hilum, and cross-sections (discs) thinning with the distance from it.
    fine = np.zeros((2 * size, 2 * size), np.uint8)  # 255 = vessel; uint8 keeps the 2x grid cheap
    vpaint = _Painter(fine, s / 2)
    dots = np.zeros((4, 2 * size, 2 * size), np.uint8)  # seeds of discs, by radius class
    radii_mm = (0.45, 0.9, 1.5, 2.3)
    for side in (-1, 1):
        half = lungs[:, : size // 2] if side < 0 else lungs[:, size // 2 :]
        cols = np.flatnonzero(half.any(axis=0))
        area = int(half.sum())
        if area < 10:
            continue
        medial = cols[-1] if side < 0 else cols[0] + size // 2
        hx = float(v[medial]) + side * 6.0
        hy = float(mid_y + u(-5, 10))
        _vessel_tree(vpaint, rng, hx, hy, side, level, 255.0)
        # Cross-sections scattered uniformly over the lung: draw points in the half, keep lung ones.
        n_dots = int(area * s * s / 140.0)
        cand_y = rng.integers(0, size, 3 * n_dots)
        cand_x = rng.integers(0, size // 2, 3 * n_dots) + (0 if side < 0 else size // 2)
        hit = lungs[cand_y, cand_x]
        py_, px_ = cand_y[hit][:n_dots], cand_x[hit][:n_dots]
        n_dots = len(px_)
        dist = np.hypot(v[px_] - hx, v[py_] - hy)
        radius = rng.uniform(0.5, 2.6, n_dots) * np.exp(-dist / 60.0)
        cls = np.clip(np.searchsorted(radii_mm, radius), 0, 3)
        sub = rng.integers(0, 2, (2, n_dots))  # which of the 2x2 fine pixels holds the seed
        dots[cls, 2 * py_ + sub[0], 2 * px_ + sub[1]] = 255
    for k, r in enumerate(radii_mm):
        if dots[k].any():
            np.maximum(fine, cv2.dilate(dots[k], _disc(max(round(r / (s / 2)), 0))), out=fine)
    vessels = cv2.resize(fine, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    if s < 1.0:  # at fine spacing, round the 2x-grid staircase off
        vessels = cv2.GaussianBlur(vessels, (0, 0), 0.5)
    # Fissures: faint thin arcs of pleura across each lung.
    fissure = np.zeros_like(hu)
    fpaint = _Painter(fissure, s)
    for side in (-1, 1):
        if rng.random() < 0.6:
            x0, y0 = side * u(20, 40), post_y - u(10, 30)
            x1, y1 = side * u(70, 110), ant_y + u(20, 60)
            xm, ym = 0.5 * (x0 + x1) + side * u(5, 20), 0.5 * (y0 + y1)
            strength = min(1.0, 0.6 / s)  # a 0.6 mm line covers part of a coarse pixel
            fpaint.line(x0, y0, xm, ym, 0.6, strength)
            fpaint.line(xm, ym, x1, y1, 0.6, strength)
    fissure *= lungs
    hu += fissure * np.maximum(-700.0 - hu, 0.0)
    vessels *= lungs
    hu += vessels * (blood - hu)  # a vessel covering half a pixel adds half its contrast

    # 8. Ribs along the cavity wall (cut obliquely, so elongated along it), sternum, scapulae.
    before_bone = hu.copy()
    n_ribs = int(rng.integers(6, 9))
    for side in (-1, 1):
        for k in range(n_ribs):
            # From beside the spine (theta ~ 100 deg) round the side to the front (~ 285 deg).
            theta = math.radians(100 + 185 * (k + u(-0.3, 0.3)) / (n_ribs - 1))
            b_r = 0.5 * (c_bp + m_bp) if math.sin(theta) > 0 else c_ba + wall * 0.5
            a_r = 0.5 * (c_a + m_a)
            x, y = _superellipse_point(theta, 0.0, cav_cy, a_r, b_r, 2.4)
            tx, ty = _superellipse_point(theta + 0.05, 0.0, cav_cy, a_r, b_r, 2.4)
            ang = math.degrees(math.atan2(ty - y, side * (tx - x)))
            if math.sin(theta) < -0.75:  # anterior ends: costal cartilage
                paint.ellipse(side * x, y, u(6, 10), u(3, 4.5), ang, u(80, 200))
            else:
                paint.bone(side * x, y, u(5, 12), u(2.8, 4.0), ang, u(700, 1000), u(200, 350), 1.2)
    paint.bone(
        0.0, ant_y - wall * 0.5 - pect * 0.3, u(12, 18), u(4.5, 6.5), 0.0, u(600, 800), u(200, 300), cortex_mm=1.5
    )
    if level < 0.6:  # scapulae: blades in the posterior chest-wall muscle, outside the ribs
        blades = np.zeros_like(hu)
        for side in (-1, 1):
            _Painter(blades, s).line(
                side * u(55, 75), post_y + u(2, 10), side * (m_a - u(8, 18)), cav_cy + u(25, 45), u(3, 5), u(500, 800)
            )
        np.copyto(hu, blades, where=(blades > 0) & ~cavity)

    lungs &= hu <= before_bone  # where a rib bulges into the lung, the rib wins

    # 9. Outside the reconstruction circle scanners write a constant padding value.
    np.copyto(hu, np.float32(PADDING_HU), where=~_inside_fov(size))
    params = {
        "level": round(level, 3),
        "contrast": contrast,
        "blood_hu": round(blood, 1),
        "body_mm": [round(2 * a_body, 1), round(b_ant + b_post, 1)],
    }
    return ChestSlice(hu=hu, lung=lungs, params=params)


def _vessel_tree(
    paint: _Painter, rng: np.random.Generator, hx: float, hy: float, side: int, level: float, value: float
) -> None:
    """Pulmonary vessels from a hilum (hx, hy) mm, outwards (side -1 right lung, +1 left): each
    segment forks in two thinner, shorter ones, so they taper towards the pleura."""
    stack = []
    for _ in range(int(rng.integers(2, 5))):
        # Fan out laterally, anteriorly and posteriorly (angles in image space, y down).
        ang = math.radians(rng.uniform(-75, 75) + (0 if side > 0 else 180))
        stack.append((hx, hy, ang, rng.uniform(3.0, 5.0), rng.uniform(14, 28), 0))
    # An axial slice cuts most vessels obliquely: only short in-plane runs show, near the hilum.
    max_depth = 3 if level > 0.3 else 2
    while stack:
        x, y, ang, width, length, depth = stack.pop()
        x1, y1 = x + length * math.cos(ang), y + length * math.sin(ang)
        paint.line(x, y, x1, y1, width, value)
        if depth < max_depth:
            for sgn in (-1, 1):
                if rng.random() < 0.3:  # this branch leaves the slice
                    continue
                child = ang + sgn * math.radians(rng.uniform(15, 40))
                stack.append((x1, y1, child, width * rng.uniform(0.55, 0.7), length * rng.uniform(0.6, 0.8), depth + 1))


_NOISE_SIGMA_PX = 0.7
_NOISE_KSIZE = (7, 7)
# Std of unit white noise after that blur: the norm of the (separable) kernel.
_NOISE_GAIN = float((cv2.getGaussianKernel(_NOISE_KSIZE[0], _NOISE_SIGMA_PX) ** 2).sum())


def finish(hu: np.ndarray, spacing_mm: float, rng: np.random.Generator, noise_hu: float | None = None) -> np.ndarray:
    """The scanner: in-plane blur (Gaussian PSF, 1.06 mm FWHM) and noise correlated over about a
    pixel (std ``noise_hu``, drawn in 10..25 HU when None), the padding kept constant, rounded to
    integer HU. Returns a new (H, W) float32 array in [-1024, 3071]."""
    padding = hu <= PADDING_HU
    sigma_px = 0.45 / spacing_mm
    out = cv2.GaussianBlur(hu, (0, 0), sigma_px) if sigma_px > 0.25 else hu.copy()
    sigma_n = rng.uniform(10, 25) if noise_hu is None else noise_hu
    white = rng.standard_normal(hu.shape, dtype=np.float32)
    out += cv2.GaussianBlur(white, _NOISE_KSIZE, _NOISE_SIGMA_PX) * np.float32(sigma_n / _NOISE_GAIN)
    np.copyto(out, np.float32(PADDING_HU), where=padding)
    np.clip(out, -1024, 3071, out=out)
    return np.rint(out) + np.float32(0.0)  # + 0 turns rint's -0.0 into 0.0


@dataclass(frozen=True)
class VesselSection:
    """One pulmonary vessel crossing the slice (``data.physics = "ct"``), in mm from the image centre.

    diameter_mm: the vessel's calibre; cos_theta: cosine of the angle between its axis and the body
    axis (1: cut square-on, a round section); angle_deg: in-plane direction of its oblique smear
    (towards the hilum)."""

    x: float
    y: float
    diameter_mm: float
    cos_theta: float
    angle_deg: float

    def footprint(self, slice_mm: float) -> tuple[float, float, float]:
        """(semi-major mm, semi-minor mm, contrast in [0, 1]) of its section through a slab of
        ``slice_mm``: a cylinder of diameter d tilted by theta covers an ellipse d/cos(theta) long,
        smeared by T tan(theta) across the slab, and fills only part of the slab's depth there, so
        that the blood it holds (pi d^2 T / (4 cos theta)) is conserved: contrast d / (d + T sin theta).
        Thin, steeply tilted vessels in thick slices fade."""
        d, c = self.diameter_mm, self.cos_theta
        sin, tan = math.sqrt(max(1.0 - c * c, 0.0)), math.sqrt(max(1.0 - c * c, 0.0)) / c
        return 0.5 * (d / c + slice_mm * tan), 0.5 * d, d / (d + slice_mm * sin)


def vessel_sections(chest: ChestSlice, spacing_mm: float, rng: np.random.Generator) -> list[VesselSection]:
    """The larger pulmonary vessels cut across (``data.physics = "ct"``): sections 1-10 mm across,
    the widest near the hila and thinning towards the pleura, tilted up to 66 degrees from the
    body axis; plus the 2-4 lobar and segmental vessels (5-8 mm) next to each hilum, cut more
    obliquely. They are what makes nodule segmentation on a single slice hard: a bright round blob
    of a nodule's size. Draw them with :func:`paint_vessel_sections`, once per slice thickness."""
    lungs = chest.lung
    size = lungs.shape[0]
    v = _axis(size)
    out: list[VesselSection] = []
    for side in (-1, 1):
        half = lungs[:, : size // 2] if side < 0 else lungs[:, size // 2 :]
        rows, cols = np.nonzero(half)
        if len(rows) < 10:
            continue
        cols = cols + (0 if side < 0 else size // 2)
        # The hilum: the medial edge of this lung at the height of its centroid.
        cy = float(rows.mean())
        near = np.abs(rows - cy) < max(3, size // 40)
        mx = cols[near].max() if side < 0 else cols[near].min()
        hx, hy = float(v[int(mx)]), float(v[int(round(cy))])
        # About one per 20 cm^2 of lung, at uniformly drawn lung pixels, thinning outwards.
        n = int(len(rows) * spacing_mm**2 / 2000.0)
        pick = rng.integers(0, len(rows), n)
        for r, c in zip(rows[pick], cols[pick]):
            x, y = float(v[c]), float(v[r])
            dist = math.hypot(x - hx, y - hy)
            diameter = max(1.0, rng.uniform(2.0, 10.0) * math.exp(-dist / 70.0))
            cos_theta = rng.uniform(0.4, 1.0)  # oblique cuts are long along the direction to the hilum
            out.append(VesselSection(x, y, diameter, cos_theta, math.degrees(math.atan2(y - hy, x - hx))))
        near_hilum = np.hypot(v[cols] - hx, v[rows] - hy)
        pool = np.flatnonzero((near_hilum > 8.0) & (near_hilum < 45.0))
        for j in rng.choice(pool, size=min(len(pool), int(rng.integers(2, 5))), replace=False) if len(pool) else ():
            x, y = float(v[cols[j]]), float(v[rows[j]])
            out.append(
                VesselSection(
                    x, y, rng.uniform(5.0, 8.0), rng.uniform(0.45, 0.85), math.degrees(math.atan2(y - hy, x - hx))
                )
            )
    return out


def _ellipse_coverage(
    cov: np.ndarray, cx: float, cy: float, a: float, b: float, angle_deg: float, value: float, n: int = 6
) -> None:
    """Raise ``cov`` (H, W) to ``value`` times the share of each pixel that the ellipse covers:
    centre (cx, cy), semi-axes a (along angle_deg, clockwise from the x axis as the image shows it)
    and b, in pixels, pixel centres at integer coordinates; n x n samples a pixel. Exact to the
    sampling even for sections under a pixel, which a filled polygon overstates (a 1 mm vessel
    drawn with cv2.ellipse on a 0.7 mm grid covers 2.5 times its area)."""
    h, w = cov.shape
    ext = max(a, b) + 1.0
    c0, c1 = max(math.floor(cx - ext), 0), min(math.ceil(cx + ext) + 1, w)
    r0, r1 = max(math.floor(cy - ext), 0), min(math.ceil(cy + ext) + 1, h)
    if c1 <= c0 or r1 <= r0:
        return
    offs = (np.arange(n) + 0.5) / n - 0.5
    dx = (np.arange(c0, c1)[:, None] + offs[None, :]).ravel()[None, :] - cx
    dy = (np.arange(r0, r1)[:, None] + offs[None, :]).ravel()[:, None] - cy
    t = math.radians(angle_deg)
    u = (dx * math.cos(t) + dy * math.sin(t)) / a
    v = (dy * math.cos(t) - dx * math.sin(t)) / b
    share = (u * u + v * v <= 1.0).reshape(r1 - r0, n, c1 - c0, n).mean(axis=(1, 3), dtype=np.float32)
    region = cov[r0:r1, c0:c1]
    np.maximum(region, share * np.float32(value), out=region)


def paint_vessel_sections(
    hu: np.ndarray, chest: ChestSlice, sections: list[VesselSection], spacing_mm: float, slice_mm: float
) -> None:
    """Fill ``sections`` with blood in ``hu`` (H, W float32, modified in place; inside the lungs only)
    as a slab of ``slice_mm`` sees them (:meth:`VesselSection.footprint`), with the share of each
    pixel they cover (partial volume at their edges). Where sections overlap, the denser one shows."""
    lungs = chest.lung
    size = lungs.shape[0]
    blood = float(chest.params.get("blood_hu", 40.0))
    cov = np.zeros((size, size), np.float32)
    for vs in sections:
        major, minor, contrast = vs.footprint(slice_mm)
        _ellipse_coverage(
            cov,
            vs.x / spacing_mm + size / 2 - 0.5,
            vs.y / spacing_mm + size / 2 - 0.5,
            major / spacing_mm,
            minor / spacing_mm,
            vs.angle_deg,
            contrast,
        )
    hu += (cov * lungs) * (np.float32(blood) - hu)
