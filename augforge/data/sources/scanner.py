"""Simulated CT acquisition for ``lidc-phantom`` with ``data.physics = "ct"``: two scanner sites.

A *site* is a scanner with its reconstruction protocol. :func:`acquire` turns a noise-free HU slice
into what that site would reconstruct:

1. the reconstruction kernel: a Gaussian point-spread function, and for sharp kernels an
   edge-enhancing overshoot (an unsharp mask);
2. quantum noise with the spectrum of filtered back-projection: the noise power rises with spatial
   frequency (the ramp filter) and is cut by the kernel's apodisation window (here a Hann window
   with its cut-off in cycles/mm), so the noise is band-pass, not low-pass blurred white noise;
   its standard deviation is set for a reference patient and grows with the patient's width;
3. a per-scan Hounsfield-unit offset (calibration drift between scanners);
4. the padding outside the reconstruction circle kept, integer HU.

Slice thickness enters earlier, where the nodule is drawn (partial volume across the slab, see
:func:`partial_volume`), because it acts on the object, not on the noise.

The two sites (:data:`SITES`) and the sources of their ranges are in docs/data.md
("Simulated CT physics"); :func:`card` returns them as a JSON-able data card, which is part of the
dataset's cache key and provenance.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

#: Reference patient width (mm, left-right body diameter) at which a site's noise range applies.
REFERENCE_WIDTH_MM = 320.0
#: Growth of the noise with the patient's width: exp(rate * (width - reference)). Water attenuates
#: about 0.02/mm at CT energies, so at a fixed tube current the noise grows by exp(0.01/mm); tube
#: current modulation gives part of that back. Half of it is kept: a stand-in, not a measured figure.
NOISE_GROWTH_PER_MM = 0.005
PADDING_HU = -1024.0


@dataclass(frozen=True)
class Site:
    """One simulated scanner and protocol.

    psf_fwhm_mm:    full width at half maximum of the in-plane point-spread function.
    overshoot:      edge enhancement: out = blurred + overshoot * (blurred - blurred at overshoot_mm).
    overshoot_mm:   the width (Gaussian sigma, mm) of that enhancement's low-pass.
    noise_hu:       soft-tissue noise standard deviation range at the reference width (drawn per scan).
    nps_cutoff:     cut-off of the Hann apodisation window, cycles/mm (the noise spectrum peaks near
                    0.31 times it).
    slice_mm:       reconstructed slice thickness (partial volume of nodules across the slab).
    hu_offset:      range of the scanner's HU offset (drawn per scan).
    width_scale:    this site's patients' width relative to the anatomy drawn (the noise grows with it).
    """

    name: str
    psf_fwhm_mm: float
    overshoot: float
    overshoot_mm: float
    noise_hu: tuple[float, float]
    nps_cutoff: float
    slice_mm: float
    hu_offset: tuple[float, float]
    width_scale: float = 1.0


#: The training site (training slices, the in-domain test, the healthy canvases) and the held-out
#: site (the shifted test, and the data oracle's training slices): sharper kernel, more noise,
#: thicker slices, another HU offset, larger patients.
SITES: dict[str, Site] = {
    "train-site": Site(
        name="train-site",
        psf_fwhm_mm=1.1,
        overshoot=0.0,
        overshoot_mm=1.0,
        noise_hu=(15.0, 22.0),
        nps_cutoff=0.8,
        slice_mm=1.25,
        hu_offset=(-3.0, 3.0),
    ),
    "held-out-site": Site(
        name="held-out-site",
        psf_fwhm_mm=0.8,
        overshoot=1.0,
        overshoot_mm=1.2,
        noise_hu=(45.0, 65.0),
        nps_cutoff=1.6,
        slice_mm=3.0,
        hu_offset=(4.0, 10.0),
        width_scale=1.15,
    ),
}
TRAIN_SITE, HELD_OUT_SITE = "train-site", "held-out-site"


def card() -> dict[str, Any]:
    """The physics settings as JSON values: recorded in the dataset's cache key and meta."""
    return {
        "sites": {k: dataclasses.asdict(v) for k, v in SITES.items()},
        "reference_width_mm": REFERENCE_WIDTH_MM,
        "noise_growth_per_mm": NOISE_GROWTH_PER_MM,
    }


@functools.lru_cache(maxsize=16)
def _noise_filter(size: int, spacing_mm: float, cutoff: float) -> tuple[np.ndarray, float]:
    """The amplitude filter sqrt(NPS) on the rfft2 grid and the std it gives unit white noise."""
    fy = np.fft.fftfreq(size, d=spacing_mm)[:, None]
    fx = np.fft.rfftfreq(size, d=spacing_mm)[None, :]
    f = np.hypot(fx, fy)
    window = np.where(f < cutoff, 0.5 * (1.0 + np.cos(np.pi * np.minimum(f / cutoff, 1.0))), 0.0)
    amp = np.sqrt(f) * window
    # Parseval on the real FFT grid: the columns between 0 and Nyquist stand for two each.
    weights = np.full(amp.shape, 2.0)
    weights[:, 0] = 1.0
    if size % 2 == 0:
        weights[:, -1] = 1.0
    gain = float(np.sqrt((weights * amp**2).sum() / size**2))
    return amp.astype(np.float32), gain


def ct_noise(
    shape: tuple[int, int], spacing_mm: float, cutoff: float, sd: float, rng: np.random.Generator
) -> np.ndarray:
    """Filtered back-projection noise (H, W) float32 of standard deviation ``sd`` (in expectation)."""
    h, w = shape
    if h != w:
        raise ValueError(f"square slices only, got {shape}")
    amp, gain = _noise_filter(h, round(spacing_mm, 6), cutoff)
    white = rng.standard_normal(shape, dtype=np.float32)
    coloured = np.fft.irfft2(np.fft.rfft2(white) * amp, s=shape)
    return (coloured * (sd / gain)).astype(np.float32)


def noise_sd(site: Site, width_mm: float, rng: np.random.Generator) -> float:
    """This scan's soft-tissue noise: the site's range at the reference width, grown with the width."""
    base = rng.uniform(*site.noise_hu)
    return float(base * math.exp(NOISE_GROWTH_PER_MM * (width_mm * site.width_scale - REFERENCE_WIDTH_MM)))


def acquire(hu: np.ndarray, spacing_mm: float, site: Site, rng: np.random.Generator, width_mm: float) -> np.ndarray:
    """What ``site`` reconstructs from the noise-free slice ``hu`` (H, W) float32 HU: kernel, noise,
    HU offset, padding kept, rounded to integer HU in [-1024, 3071]. Returns a new array."""
    padding = hu <= PADDING_HU
    sigma = site.psf_fwhm_mm / 2.3548 / spacing_mm
    out = cv2.GaussianBlur(hu, (0, 0), sigma) if sigma > 0.25 else hu.copy()
    if site.overshoot > 0:
        low = cv2.GaussianBlur(out, (0, 0), site.overshoot_mm / spacing_mm)
        out += np.float32(site.overshoot) * (out - low)
    sd = noise_sd(site, width_mm, rng)
    out += ct_noise(hu.shape, spacing_mm, site.nps_cutoff, sd, rng)
    out += np.float32(rng.uniform(*site.hu_offset))
    np.copyto(out, np.float32(PADDING_HU), where=padding)
    np.clip(out, -1024, 3071, out=out)
    return np.rint(out) + np.float32(0.0)


def partial_volume(coverage: np.ndarray, spacing_mm: float, slice_mm: float, offset_mm: float = 0.0) -> np.ndarray:
    """The share of a slab of thickness ``slice_mm`` that a roughly spherical nodule fills above each
    pixel of its largest cross-section ``coverage`` (H, W) in [0, 1]; the slab's centre lies
    ``offset_mm`` from the nodule's centre along the body axis.

    A pixel at in-plane distance rho from the centre of a sphere of radius R lies under the chord
    [-c/2, c/2] with c = 2 sqrt(R^2 - rho^2); the slab holds the part of it inside
    [offset - T/2, offset + T/2], divided by T. R is the radius of a disc of the cross-section's area,
    and rho = R minus the pixel centre's distance to the outline, so the model follows the outline's
    shape: edges fade, a thick core stays whole. Returns coverage times that share.
    """
    inside = (coverage >= 0.5).astype(np.uint8)
    area_mm2 = float(coverage.sum()) * spacing_mm**2
    if area_mm2 <= 0 or not inside.any():
        return coverage
    radius = math.sqrt(area_mm2 / math.pi)
    padded = cv2.copyMakeBorder(inside, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    depth = cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1] * spacing_mm
    # A pixel of depth d (distance to the nearest outside pixel) has its centre d - spacing/2 inside
    # the outline; pixels outside the rasterised outline sit on the edge.
    rho = np.clip(radius - np.maximum(depth - 0.5 * spacing_mm, 0.0), 0.0, radius)
    half = np.sqrt(np.maximum(radius**2 - rho**2, 0.0))
    lo, hi = offset_mm - 0.5 * slice_mm, offset_mm + 0.5 * slice_mm
    share = np.clip(np.minimum(half, hi) - np.maximum(-half, lo), 0.0, None) / slice_mm
    return (coverage * np.minimum(share, 1.0)).astype(np.float32)
