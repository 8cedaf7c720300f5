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

from typing import Any

import cv2
import numpy as np

from augforge import DataError, Param, PrepareContext, Slice, Strategy, hookimpl, seeding
from augforge.synthesis import (
    CANVAS_TRIES,
    HU_SCALE,
    PARENCHYMA_HU,
    GeneratedSet,
    PasteScale,
    TumourROIs,
    canvas_site,
    extract_rois,
    paste_canvases,
    paste_into_canvases,
    paste_scale,
)

#: Square crops reach this share of the tumour's longer side beyond its box on every side: a turn by
#: any angle keeps the tumour inside (its farthest pixel lies at most 0.71 sides from the centre).
_MARGIN_FRAC = 0.25
#: Separates this strategy's random stream from others seeded with the same trial seed.
_STREAM = 0xC0B7


class CopyPaste(Strategy):
    name = "copy-paste"
    description = (
        "Real training tumours, mirrored, turned and rescaled at random, pasted into healthy "
        "lung parenchyma like the DCGAN's (the control for the generator)."
    )
    params = (
        Param(
            "ratio",
            float,
            1.0,
            "synthetic slices per real training slice (the DCGAN's default too)",
            low=0.0,
            high=20.0,
        ),
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
        Param("feather_px", float, 1.5, "width of the pasted tumour's soft edge, pixels", low=0.0, high=10.0),
        Param("clearance_px", float, 1.0, "distance kept from vessels and the lung wall, pixels", low=0.0, high=20.0),
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
    def donors(self, train: list[Slice], scale: PasteScale = HU_SCALE) -> TumourROIs:
        """The real tumours of ``train`` as square ``roi_size`` patches, parenchyma (on ``scale``)
        outside the tumour.

        Synthetic slices (an earlier part of a hybrid may have added some) are never donors.
        Raises DataError when the training split holds no tumour.
        """
        real = [s for s in train if s.has_tumour and not s.is_synthetic]
        try:
            return extract_rois(
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

    # -- the synthetic slices -------------------------------------------------------------------
    def synthesize(
        self,
        rois: TumourROIs,
        canvases: list[Slice],
        n: int,
        *,
        seed: int,
        log: Any = print,
        intensity: PasteScale = HU_SCALE,
    ) -> GeneratedSet:
        """Paste ``n`` moved donor tumours into ``canvases`` (cycled in a seeded order), one per slice.

        Donors are used in a seeded shuffled cycle, so each is used about ``n / len(rois)`` times and
        the added tumours keep the training split's mix of sizes and classes before rescaling.
        """
        if n > 0 and not canvases:
            raise DataError(
                f"strategy {self.name!r} pastes tumours into healthy slices, and the dataset "
                "has none: build it with data.n_healthy > 0, add healthy slices, or set "
                "copy-paste.canvases=train"
            )
        c = self.config
        rng = seeding.stream(seed, _STREAM)
        donor_order = rng.permutation(len(rois))
        canvas_order = rng.permutation(len(canvases)) if canvases else np.zeros(0, int)
        # Which tumour of its slice each patch is (a slice may hold several): provenance.
        first = {sid: rois.slice_ids.index(sid) for sid in set(rois.slice_ids)}
        sites: dict[int, tuple[np.ndarray, np.ndarray, float]] = {}  # canvas -> (lung, allowed, noise)

        def site(j: int) -> tuple[np.ndarray, np.ndarray, float]:
            if j not in sites:
                sites[j] = canvas_site(canvases[j], intensity, clearance_px=c["clearance_px"])
            return sites[j]

        patches_hu = np.empty((n, rois.size, rois.size), np.float32)
        patches_mask = np.zeros((n, rois.size, rois.size), bool)
        out: list[Slice] = []
        skipped = 0
        for i in range(n):
            k = int(donor_order[i % len(rois)])
            angle = float(rng.uniform(-c["rotate_deg"], c["rotate_deg"]))
            mirror = bool(rng.random() < c["p_mirror"])
            scale = float(rng.uniform(c["scale_min"], c["scale_max"]))
            t_hu, t_mask = self.turn(rois.hu[k], rois.coverage[k], angle, mirror, rois.background_hu)
            patches_hu[i], patches_mask[i] = t_hu, t_mask
            pasted = paste_into_canvases(
                canvases,
                canvas_order,
                i,
                t_hu,
                t_mask,
                site=site,
                # The patch spans the donor's crop: its size in mm, rescaled, in this canvas's pixels.
                shape=lambda canvas, f, side=rois.crop_mm[k] * scale: tuple(
                    int(v) for v in np.maximum(np.round(side * f / canvas.spacing_mm), 3)
                ),
                rng=rng,
                slice_id=f"{self.name}-s{seed}-{i:05d}",
                source=Slice.synthetic_source(self.name),
                feather_px=c["feather_px"],
                # A real tumour carries its scanner noise already: adding the canvas's would double it.
                provenance={
                    "strategy": self.name,
                    "donor": rois.slice_ids[k],
                    "donor_tumour": k - first[rois.slice_ids[k]],
                    "donor_label": rois.labels[k],
                    "angle_deg": round(angle, 2),
                    "mirror": mirror,
                    "scale": round(scale, 4),
                    "seed": seed,
                    "sample": i,
                },
                solid_hu=intensity.solid,
            )
            if pasted is None:
                skipped += 1
            else:
                out.append(pasted)
        if skipped:
            log(
                f"{self.name}: {skipped} of {n} tumours found no free lung parenchyma in {CANVAS_TRIES} "
                f"canvases even when shrunk; {len(out)} synthetic slices made"
            )
        info = {"donors": len(rois), "donor_slices": len(set(rois.slice_ids)), "requested": n, "made": len(out)}
        return GeneratedSet(
            slices=out,
            patches_hu=patches_hu,
            patches_mask=patches_mask,
            real_hu=rois.hu,
            real_mask=rois.mask,
            info=info,
        )

    def canvases(self, train: list[Slice], ctx: PrepareContext) -> list[Slice]:
        """The slices tumours are pasted into (:func:`augforge.synthesis.paste_canvases`)."""
        return paste_canvases(train, ctx.healthy, self.config["canvases"], who=self.name, log=ctx.log)

    def generate(self, train: list[Slice], ctx: PrepareContext, n: int) -> GeneratedSet:
        """Paste ``n`` tumours copied from ``train`` into the canvases (``augforge generate`` calls this)."""
        scale = paste_scale(ctx.intensity, train)
        return self.synthesize(
            self.donors(train, scale), self.canvases(train, ctx), n, seed=ctx.seed, log=ctx.log, intensity=scale
        )

    def prepare(self, train: list[Slice], ctx: PrepareContext) -> list[Slice]:
        real = sum(1 for s in train if not s.is_synthetic)
        n = round(self.config["ratio"] * real)
        if n == 0:
            return list(train)
        return list(train) + self.generate(train, ctx, n).slices


@hookimpl
def register_strategies(register):
    register(CopyPaste)
