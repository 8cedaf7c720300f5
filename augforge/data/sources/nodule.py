"""Real LIDC nodule outlines, rasterised at the phantom's spacing, placed in a lung and rendered in HU.

The outline (native pixel coordinates at the scan's spacing) is converted to mm and then to phantom
pixels, and rasterised on an 8x finer grid so that the mask is the set of pixels at least half
covered by the radiologist's outline (holes cut out). HU follow the LIDC texture rating:

- 5 solid: 10..60 HU, sharp edge; 4 solid/mixed: the same with a thin ground-glass halo.
- 3 part-solid: a ground-glass body with a solid core, a scaled copy of the outline whose mean
  diameter sets the Lung-RADS class (see :func:`augforge.data.processing.lungrads.classify`).
- 1, 2 ground glass: -650..-250 HU, soft edge, and only ever brightening what lies beneath, so
  vessels stay visible through it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from augforge.data.sources.anatomy import smooth_noise
from augforge.data.sources.lidc import LidcNodule, Outline
from augforge.data.sources.scanner import partial_volume

#: A tumour mask never has fewer pixels: smaller nodules are drawn enlarged (``render_scale > 1``).
MIN_MASK_PIXELS = 4
_SUPERSAMPLE = 8
_SHIFT = 3  # OpenCV fixed-point bits for sub-pixel polygon vertices


@dataclass
class Footprint:
    """A rasterised outline in a crop of the slice: coverage (h, w) float32 in [0, 1] whose top-left
    pixel is (row0, col0) of the slice."""

    coverage: np.ndarray
    row0: int
    col0: int

    @property
    def mask(self) -> np.ndarray:
        return self.coverage >= 0.5


def _vertices_px(
    outline: Outline, native_spacing: float, spacing: float, scale: float
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Outline vertices relative to the inclusion centroid, in phantom pixels."""
    centre = np.concatenate(outline.inclusions).mean(axis=0)
    k = native_spacing * scale / spacing
    return ([(p - centre) * k for p in outline.inclusions], [(p - centre) * k for p in outline.exclusions])


def radius_px(outline: Outline, native_spacing: float, spacing: float, scale: float = 1.0) -> float:
    """Largest distance (phantom pixels) from the inclusion centroid to a vertex."""
    inc, _ = _vertices_px(outline, native_spacing, spacing, scale)
    return float(max(np.hypot(p[:, 0], p[:, 1]).max() for p in inc))


def rasterise(
    outline: Outline,
    native_spacing: float,
    spacing: float,
    centre: tuple[float, float],
    shape: tuple[int, int],
    scale: float = 1.0,
    frame: tuple[int, int, int, int] | None = None,
) -> Footprint:
    """Coverage of ``outline`` (scaled by ``scale`` about its centroid) centred at ``centre`` = (x, y)
    phantom pixels on a slice of ``shape``; pixels are 1 x 1 squares centred on integer coordinates.
    The crop is the outline's bounding box, or ``frame`` = (row0, col0, h, w) when given."""
    inc, exc = _vertices_px(outline, native_spacing, spacing, scale)
    cx, cy = centre
    if frame is None:
        pts = np.concatenate(inc)
        col0 = max(math.floor(cx + pts[:, 0].min()) - 1, 0)
        row0 = max(math.floor(cy + pts[:, 1].min()) - 1, 0)
        col1 = min(math.ceil(cx + pts[:, 0].max()) + 2, shape[1])
        row1 = min(math.ceil(cy + pts[:, 1].max()) + 2, shape[0])
        h, w = max(row1 - row0, 1), max(col1 - col0, 1)
    else:
        row0, col0, h, w = frame
    fine = np.zeros((h * _SUPERSAMPLE, w * _SUPERSAMPLE), np.uint8)

    def fine_px(p: np.ndarray) -> np.ndarray:
        # Continuous slice coordinate x -> fine-grid pixel coordinate, in 1/2**_SHIFT units.
        q = np.empty_like(p)
        q[:, 0] = (p[:, 0] + cx - col0 + 0.5) * _SUPERSAMPLE - 0.5
        q[:, 1] = (p[:, 1] + cy - row0 + 0.5) * _SUPERSAMPLE - 0.5
        return np.rint(q * (1 << _SHIFT)).astype(np.int32)

    cv2.fillPoly(fine, [fine_px(p) for p in inc], 255, cv2.LINE_8, _SHIFT)
    if exc:
        cv2.fillPoly(fine, [fine_px(p) for p in exc], 0, cv2.LINE_8, _SHIFT)
    coverage = cv2.resize(fine, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    return Footprint(coverage, row0, col0)


def visible_scale(outline: Outline, native_spacing: float, spacing: float) -> float:
    """The smallest scale >= 1 at which the outline's mask has at least ``MIN_MASK_PIXELS`` pixels
    wherever it lands on the grid (checked at a few sub-pixel offsets)."""
    scale = 1.0
    if outline.area_px * (native_spacing / spacing) ** 2 >= 4 * MIN_MASK_PIXELS:
        return scale  # large enough wherever it lands: skip the trial rasterisations
    shape = (10_000, 10_000)
    for _ in range(20):
        counts = [
            int(rasterise(outline, native_spacing, spacing, (500 + dx, 500 + dy), shape, scale).mask.sum())
            for dx, dy in ((0.0, 0.0), (0.5, 0.5), (0.25, 0.75), (0.5, 0.0))
        ]
        if min(counts) >= MIN_MASK_PIXELS:
            return scale
        area_px = outline.area_px * (native_spacing * scale / spacing) ** 2
        scale *= max(math.sqrt(MIN_MASK_PIXELS / max(area_px, 1e-3)), 1.15)
    return scale


def choose_centre(
    lung: np.ndarray, radius: float, preferred: tuple[float, float], rng: np.random.Generator
) -> tuple[tuple[float, float], bool]:
    """A centre (x, y) in pixels for a nodule of ``radius`` pixels inside ``lung`` (H, W) bool: a
    random lung pixel among those nearest to ``preferred`` where the nodule clears the pleura by 1.5
    pixels, plus a random sub-pixel offset. Returns (centre, fits); when it fits nowhere, the
    deepest lung pixel and False."""
    dist = cv2.distanceTransform(lung.astype(np.uint8), cv2.DIST_L2, 5)
    ok = dist >= radius + 1.5
    if ok.any():
        rows, cols = np.nonzero(ok)
        d = np.hypot(cols - preferred[0], rows - preferred[1])
        # Any valid centre up to `spread` pixels farther than the nearest one: otherwise a nodule
        # whose real position falls outside this phantom's lung would always end up on the pleura.
        spread = 0.08 * lung.shape[0]
        near = np.flatnonzero(d <= d.min() + spread)
        i = int(near[rng.integers(len(near))])
        r, c, fits = rows[i], cols[i], True
    else:
        r, c = np.unravel_index(int(dist.argmax()), dist.shape)
        fits = False
    return (float(c) + rng.uniform(-0.5, 0.5), float(r) + rng.uniform(-0.5, 0.5)), fits


def choose_touching_centre(
    lung: np.ndarray, radius: float, preferred: tuple[float, float], rng: np.random.Generator
) -> tuple[tuple[float, float], bool]:
    """Like :func:`choose_centre`, but the nodule touches the pleura: a centre whose distance to the
    lung's edge is about ``radius`` (within a pixel). Falls back to :func:`choose_centre` where no
    such place exists."""
    dist = cv2.distanceTransform(lung.astype(np.uint8), cv2.DIST_L2, 5)
    ok = (dist >= radius - 0.5) & (dist <= radius + 1.0)
    if not ok.any():
        return choose_centre(lung, radius, preferred, rng)
    rows, cols = np.nonzero(ok)
    d = np.hypot(cols - preferred[0], rows - preferred[1])
    near = np.flatnonzero(d <= d.min() + 0.08 * lung.shape[0])
    i = int(near[rng.integers(len(near))])
    return (float(cols[i]) + rng.uniform(-0.3, 0.3), float(rows[i]) + rng.uniform(-0.3, 0.3)), True


def consensus_label(
    drawn: LidcNodule,
    others: tuple[LidcNodule, ...],
    spacing: float,
    centre: tuple[float, float],
    scale: float,
    shape: tuple[int, int],
) -> np.ndarray | None:
    """The label of a slice whose image shows ``drawn``'s outline at ``centre``: the pixels that at
    least half of the ``others`` (the other readers of the same nodule) cover, each outline placed
    where its reader put it relative to ``drawn`` (centroid offsets in mm, scaled like the nodule)
    and on its reader's own largest slice. (H, W) uint8, or None without other readers or where their
    consensus has fewer than ``MIN_MASK_PIXELS`` pixels (the caller keeps the drawn outline)."""
    if not others:
        return None
    votes = np.zeros(shape, np.float32)
    for o in others:
        dx, dy = (
            (o.centroid_px[k] * o.spacing_mm - drawn.centroid_px[k] * drawn.spacing_mm) * scale / spacing
            for k in (0, 1)
        )
        fp = rasterise(o.outline, o.spacing_mm, spacing, (centre[0] + dx, centre[1] + dy), shape, scale)
        h, w = fp.coverage.shape
        region = votes[fp.row0 : fp.row0 + h, fp.col0 : fp.col0 + w]  # clipped at the slice's edge
        region += fp.mask[: region.shape[0], : region.shape[1]]
    label = (votes >= 0.5 * len(others)).astype(np.uint8)
    return label if int(label.sum()) >= MIN_MASK_PIXELS else None


def render(
    hu: np.ndarray,
    nodule: LidcNodule,
    spacing: float,
    centre: tuple[float, float],
    scale: float,
    rng: np.random.Generator,
    solid_fraction: float | None,
    slab: tuple[float, float] | None = None,
) -> np.ndarray:
    """Draw ``nodule`` into ``hu`` (H, W float32 HU, modified in place); return its mask (H, W) uint8.

    spacing:        phantom pixel spacing, mm; centre: (x, y) pixels; scale: see :func:`visible_scale`.
    solid_fraction: the solid core's share of the diameter for textures 3 and 4 (0.5 when None).
    slab:           (thickness, offset) in mm: draw the nodule as a slab of that thickness, centred
                    that far from the nodule's centre, sees it (partial volume, scanner.partial_volume);
                    None: an infinitely thin slice through its centre. The mask is the outline either way.
    """
    fp = rasterise(nodule.outline, nodule.spacing_mm, spacing, centre, hu.shape, scale)
    h, w = fp.coverage.shape
    seen = fp.coverage if slab is None else partial_volume(fp.coverage, spacing, *slab)
    frame = (fp.row0, fp.col0, h, w)
    crop = hu[fp.row0 : fp.row0 + h, fp.col0 : fp.col0 + w]
    mask = np.zeros(hu.shape, np.uint8)
    mask[fp.row0 : fp.row0 + h, fp.col0 : fp.col0 + w] = fp.mask

    def blurred(cov: np.ndarray, sigma_mm: float) -> np.ndarray:
        sigma = sigma_mm / spacing
        return cv2.GaussianBlur(cov, (0, 0), sigma) if sigma > 0.3 else cov

    def heterogeneity(amplitude_hu: float) -> np.ndarray:
        return amplitude_hu * smooth_noise(rng, max(h, w, 4), 4)[:h, :w]

    texture = nodule.texture
    if texture <= 4:
        # Ground glass: hazy, soft-edged, and only brightening, so vessels stay visible through it.
        level = rng.uniform(-650, -400) if texture == 1 else rng.uniform(-550, -250)
        alpha = blurred(seen, 1.0 if texture <= 2 else 0.6) * rng.uniform(0.85, 1.0)
        crop += alpha * np.maximum(level + heterogeneity(40.0) - crop, 0.0)
    if texture >= 3:
        if texture == 5:
            core = seen
        else:
            frac = 0.5 if solid_fraction is None else solid_fraction
            core = rasterise(
                nodule.outline, nodule.spacing_mm, spacing, centre, hu.shape, scale * frac, frame=frame
            ).coverage
            if slab is not None:
                core = partial_volume(core, spacing, *slab)
            core = np.minimum(core, seen)
        # Solid tissue replaces what lies beneath; its edge is sharp but for partial volume.
        solid = rng.uniform(10, 60) + heterogeneity(12.0)
        crop += blurred(core, 0.3) * (solid - crop)
    return mask
