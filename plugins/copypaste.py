"""Built-in plugin: ``copy-paste``, real training tumours moved into healthy slices.

The control for the DCGAN strategies. Everything but the tumour's origin is shared with them: the
same positions (:func:`augforge.synthesis.allowed_region`, :func:`~augforge.synthesis.valid_positions`:
every tumour pixel on lung parenchyma, clear of vessels and of the lung wall), the same soft-edged
blending (:func:`~augforge.synthesis.paste_tumour`), the same labels (the pasted nodule's measured mean
diameter and texture, classified by :func:`augforge.data.processing.lungrads.classify`), the same number of
added slices (``ratio`` per real training slice). Only the tumour differs: a real tumour of the
training split, mirrored, turned and rescaled at random, instead of a generated one. If a DCGAN beats
this, it is because its tumours are new, not because pasting tumours into healthy lungs helps.

The seed paper's notebooks list a "rotate the tumour" variant (reference/PAPER_PROTOCOL.md: Dice 0.2721
against 0.3709 without augmentation) and say no more about it; this strategy is our counterpart.

Donors come from the real (non-synthetic) tumour slices of the training split a trial receives, never
from the test split, and only from that trial's train fraction. Data without healthy slices (the
seed paper's Mendeley files, crop exports) paste into the real training slices instead, clear of the
tumour each already has, and the slice's label is the higher of the two classes; ``canvases=train``
asks for that on any data. On images without Hounsfield units (8-bit crops) lung, dense tissue and
the donors' background are read from the training slices (:mod:`augforge.synthesis.intensity`).
Randomness comes from ``ctx.seed``: the same training split, canvases and seed give the same slices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from augforge import DataError, Param, PrepareContext, Slice, hookimpl
from augforge.synthesis import (
    PARENCHYMA_HU,
    PASTE_PARAMS,
    PasteInStrategy,
    PasteScale,
    Tumour,
    TumourROIs,
    extract_rois,
    ratio_param,
)

#: Square crops reach this share of the tumour's longer side beyond its box on every side: a turn by
#: any angle keeps the tumour inside (its farthest pixel lies at most 0.71 sides from the centre).
_MARGIN_FRAC = 0.25


@dataclass
class Donors:
    """The real tumours a trial's training split offers, and the data's intensity anchors."""

    rois: TumourROIs
    scale: PasteScale


class CopyPaste(PasteInStrategy):
    name = "copy-paste"
    description = (
        "Real training tumours, mirrored, turned and rescaled at random, pasted into healthy "
        "lung parenchyma like the DCGAN's (the control for the generator)."
    )
    stream = 0xC0B7
    canvas_noise = False  # a real tumour carries its scanner noise already: adding the canvas's would double it
    no_canvas_hint = "build the dataset with data.n_healthy > 0, add healthy slices, or set copy-paste.canvases=train"
    params = (
        ratio_param("synthetic slices per real training slice (the DCGAN's default too)"),
        Param(
            "rotate_deg", float, 180.0, "turn drawn from +- this, degrees (180: any orientation)", low=0.0, high=180.0
        ),
        # scale_min <= 1 <= scale_max by their bounds, so the range is never empty.
        Param(
            "scale_min",
            float,
            0.8,
            "smallest size factor of the tumour (isotropic, vs its size in mm)",
            low=0.25,
            high=1.0,
        ),
        Param("scale_max", float, 1.25, "largest size factor of the tumour", low=1.0, high=4.0),
        Param(
            "p_mirror",
            float,
            0.5,
            "probability of a mirror image (with free turns, one axis covers both)",
            low=0.0,
            high=1.0,
        ),
        *PASTE_PARAMS,
        Param(
            "canvases",
            str,
            "healthy",
            "where tumours go: 'healthy' slices (as the DCGAN; the real "
            "training slices where the data have none) or the real 'train' slices, away from their own "
            "tumours",
            choices=("healthy", "train"),
        ),
        Param(
            "roi_size",
            int,
            64,
            "side of the square patch a donor is turned in, pixels (larger donors are downsampled to it)",
            choices=(32, 64, 128),
        ),
    )

    # -- donors -------------------------------------------------------------------------------
    def source(self, train: list[Slice], ctx: PrepareContext, scale: PasteScale) -> Donors:
        """The real tumours of ``train`` as square ``roi_size`` patches, parenchyma (on ``scale``)
        outside the tumour.

        Synthetic slices (an earlier part of a hybrid may have added some) are never donors.
        Raises DataError when the training split holds no tumour.
        """
        real = [s for s in train if s.has_tumour and not s.is_synthetic]
        try:
            rois = extract_rois(
                real,
                size=self.config["roi_size"],
                margin_px=1,
                margin_frac=_MARGIN_FRAC,
                square=True,
                background_hu=scale.parenchyma,
            )
        except DataError:
            raise DataError(
                "strategy 'copy-paste': the training split holds no real tumour to copy; "
                "use a larger --train-fraction or a dataset with tumour slices"
            ) from None
        return Donors(rois, scale)

    def real_tumours(self, source: Donors) -> TumourROIs:
        return source.rois

    def canvas_choice(self) -> str:
        return self.config["canvases"]

    # -- one donor, moved -----------------------------------------------------------------------
    @staticmethod
    def turn(
        hu: np.ndarray, coverage: np.ndarray, angle_deg: float, mirror: bool, background_hu: float = PARENCHYMA_HU
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mirror (left-right) then turn a square patch about its centre.

        hu: (S, S) HU; coverage: (S, S) float in [0, 1], the tumour's share of each pixel.
        angle_deg: counter-clockwise turn. Returns (S, S) float32 HU and the (S, S) bool tumour mask
        (turned coverage >= 0.5: the mask is resampled from the soft coverage, not from a binary step,
        so its edge stays as smooth as the original's).
        """
        hu = np.asarray(hu, np.float32)
        coverage = np.asarray(coverage, np.float32)
        if mirror:
            hu, coverage = hu[:, ::-1], coverage[:, ::-1]
        side = hu.shape[0]
        centre = ((side - 1) / 2.0, (side - 1) / 2.0)
        m = cv2.getRotationMatrix2D(centre, float(angle_deg), 1.0)
        warp = {"dsize": (side, side), "flags": cv2.INTER_LINEAR, "borderMode": cv2.BORDER_CONSTANT}
        hu_t = cv2.warpAffine(np.ascontiguousarray(hu), m, borderValue=float(background_hu), **warp)
        cov_t = cv2.warpAffine(np.ascontiguousarray(coverage), m, borderValue=0.0, **warp)
        return hu_t.astype(np.float32), cov_t >= 0.5

    # -- the tumours ----------------------------------------------------------------------------
    def draw(self, source: Donors, n: int, *, seed: int, rng: np.random.Generator) -> dict[str, Any]:
        """The donors' order: a seeded shuffled cycle, so each is used about ``n / len(rois)`` times and
        the added tumours keep the training split's mix of sizes and classes before rescaling."""
        rois = source.rois
        # Which tumour of its slice each patch is (a slice may hold several): provenance.
        first = {sid: rois.slice_ids.index(sid) for sid in set(rois.slice_ids)}
        return {"order": rng.permutation(len(rois)), "first": first}

    def tumour(self, source: Donors, drawn: dict[str, Any], i: int, rng: np.random.Generator) -> Tumour:
        """A donor, mirrored, turned and rescaled at random."""
        c, rois = self.config, source.rois
        k = int(drawn["order"][i % len(rois)])
        angle = float(rng.uniform(-c["rotate_deg"], c["rotate_deg"]))
        mirror = bool(rng.random() < c["p_mirror"])
        scale = float(rng.uniform(c["scale_min"], c["scale_max"]))
        t_hu, t_mask = self.turn(rois.hu[k], rois.coverage[k], angle, mirror, rois.background_hu)
        side_mm = rois.crop_mm[k] * scale  # the patch spans the donor's crop: its size in mm, rescaled

        def shape(canvas: Slice, factor: float) -> tuple[int, int]:
            return tuple(int(v) for v in np.maximum(np.round(side_mm * factor / canvas.spacing_mm), 3))

        facts = {
            "donor": rois.slice_ids[k],
            "donor_tumour": k - drawn["first"][rois.slice_ids[k]],
            "donor_label": rois.labels[k],
            "angle_deg": round(angle, 2),
            "mirror": mirror,
            "scale": round(scale, 4),
        }
        return Tumour(t_hu, t_mask, shape, facts)

    def facts(self, source: Donors, n: int, made: int) -> dict[str, Any]:
        rois = source.rois
        return {"donors": len(rois), "donor_slices": len(set(rois.slice_ids)), "requested": n, "made": made}


@hookimpl
def register_strategies(register):
    register(CopyPaste)
